"""The model: tower architectures, the generated nets and solvers, the ranking loss (Eqs. 1-4)."""
