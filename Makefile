# The two set-up commands of the README, `make demo` and `make test`, work on a fresh
# clone as root: they install the system packages they need, make .venv, build, run.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.deps-stamp
SYSTEM_PACKAGES := containers-storage tar-split libisal-dev libzstd-dev libssl-dev \
	zlib1g-dev libbz2-dev liblzma-dev pkg-config g++ pigz zstd xz-utils bzip2 \
	attr debootstrap e2fsprogs util-linux isal time
NATIVE_BUILD := build/native-tests
NATIVE_ASAN_BUILD := build/native-asan
export PATH := $(abspath $(VENV))/bin:$(PATH)

.PHONY: all system-deps venv build test test-native test-native-asan lint typecheck demo bench bench-native datasets clean

all: build

system-deps:
	@missing=$$(for p in $(SYSTEM_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing system packages:" $$missing; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

$(STAMP): pyproject.toml | system-deps
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "scikit-build-core>=0.10" "pybind11>=2.12" cmake ninja \
		pytest hypothesis pytest-benchmark mypy ruff
	touch $(STAMP)

venv: system-deps $(STAMP)

# Editable install; scikit-build-core keeps its CMake tree in build/ so rebuilds are
# incremental. flock serialises concurrent builds in one work tree.
build: venv
	@mkdir -p build
	flock build/.lock $(PY) -m pip install -q --no-build-isolation -e . \
		-Cbuild-dir=build/editable

test-native: venv
	cmake -S . -B $(NATIVE_BUILD) -G Ninja -DLAYERSTORE_PYTHON=OFF -DLAYERSTORE_NATIVE_TESTS=ON \
		-DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
	cmake --build $(NATIVE_BUILD)
	ctest --test-dir $(NATIVE_BUILD) --output-on-failure

# The C++ tests again under AddressSanitizer + UBSan (native code only, no Python).
test-native-asan: venv
	cmake -S . -B $(NATIVE_ASAN_BUILD) -G Ninja -DLAYERSTORE_PYTHON=OFF \
		-DLAYERSTORE_NATIVE_TESTS=ON -DLAYERSTORE_SANITIZE=ON \
		-DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
	cmake --build $(NATIVE_ASAN_BUILD)
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
	UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
		ctest --test-dir $(NATIVE_ASAN_BUILD) --output-on-failure -j$$(nproc)

lint: venv
	$(VENV)/bin/ruff check src/python tests $(wildcard benchmarks)
	$(VENV)/bin/ruff format --check src/python tests $(wildcard benchmarks)

typecheck: build
	$(VENV)/bin/mypy

test: build lint typecheck test-native test-native-asan
	$(PY) -m pytest -q tests

demo: build
	$(PY) benchmarks/demo.py --workdir .demo

bench: build
	$(PY) benchmarks/compare.py --results benchmarks/results.md

bench-native: build
	$(PY) -m pytest benchmarks/bench_native.py benchmarks/bench_store.py

datasets: venv
	$(PY) benchmarks/datasets.py

clean:
	rm -rf build .demo
