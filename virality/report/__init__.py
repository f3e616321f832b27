"""What a person reads: HTML pages (gallery, pairs, neighbours) and figures."""
