# The two set-up commands of the README, `make demo` and `make test`, work on a fresh
# clone as root: they install the system packages they need, make .venv, build, run.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.deps-stamp
SYSTEM_PACKAGES := containers-storage tar-split libisal-dev libzstd-dev libssl-dev \
	zlib1g-dev libbz2-dev liblzma-dev pkg-config g++ pigz zstd xz-utils bzip2 \
	attr debootstrap e2fsprogs util-linux isal time clang-14 libclang-rt-14-dev
NATIVE_BUILD := build/native-tests
NATIVE_ASAN_BUILD := build/native-asan
FUZZ_BUILD := build/fuzz
FUZZERS := fuzz_tar_reader fuzz_decompress fuzz_tarsplit_assemble fuzz_roundtrip fuzz_apply
FUZZ_SECONDS ?= 60
FUZZ_SMOKE_SECONDS ?= 15
export PATH := $(abspath $(VENV))/bin:$(PATH)

.PHONY: all system-deps venv build test test-native test-native-asan fuzz-build fuzz fuzz-smoke \
	lint typecheck demo bench bench-native datasets clean

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

# libFuzzer harnesses (tests/fuzz) against an ASan+UBSan+coverage build of the core, with
# seeds made fresh by make_seeds.py. Each harness runs for $(1) seconds on
# $(FUZZ_BUILD)/corpus/<harness> (kept, it grows) plus the seeds; a crash leaves its input in
# $(FUZZ_BUILD)/artifacts/ and fails the target.
fuzz-build: venv
	cmake -S . -B $(FUZZ_BUILD) -G Ninja -DLAYERSTORE_PYTHON=OFF -DLAYERSTORE_FUZZ=ON \
		-DCMAKE_CXX_COMPILER=clang++-14 -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
	cmake --build $(FUZZ_BUILD)
	$(PY) tests/fuzz/make_seeds.py $(FUZZ_BUILD)/seeds

run_fuzzers = mkdir -p $(FUZZ_BUILD)/artifacts $(FUZZ_BUILD)/logs; \
	for f in $(FUZZERS); do \
	  mkdir -p $(FUZZ_BUILD)/corpus/$$f; \
	  log=$(FUZZ_BUILD)/logs/$$f.log; \
	  case $$f in \
	    fuzz_decompress) dict= ;; \
	    fuzz_tarsplit_assemble) dict=-dict=tests/fuzz/tarsplit.dict ;; \
	    *) dict=-dict=tests/fuzz/tar.dict ;; \
	  esac; \
	  if $(FUZZ_BUILD)/$$f $$dict -max_total_time=$(1) -timeout=30 -rss_limit_mb=2560 \
	      -print_final_stats=1 -artifact_prefix=$(FUZZ_BUILD)/artifacts/$$f- \
	      $(FUZZ_BUILD)/corpus/$$f $(FUZZ_BUILD)/seeds/$$f >$$log 2>&1; then \
	    echo "$$f: $$(grep -o 'stat::number_of_executed_units: [0-9]*' $$log | cut -d' ' -f2)" \
	      "runs in $(1) s, $$(ls $(FUZZ_BUILD)/corpus/$$f | wc -l) inputs in its corpus"; \
	  else \
	    tail -n 60 $$log; echo "$$f FAILED (log: $$log)"; exit 1; \
	  fi; \
	done

fuzz: fuzz-build
	@$(call run_fuzzers,$(FUZZ_SECONDS))

fuzz-smoke: fuzz-build
	@$(call run_fuzzers,$(FUZZ_SMOKE_SECONDS))

lint: venv
	$(VENV)/bin/ruff check src/python tests $(wildcard benchmarks)
	$(VENV)/bin/ruff format --check src/python tests $(wildcard benchmarks)

typecheck: build
	$(VENV)/bin/mypy

test: build lint typecheck test-native test-native-asan fuzz-smoke
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
