# capsa: `make demo` and `make test` work on a fresh Debian 12 machine as root.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
PY     := $(VENV)/bin/python
APT_PACKAGES := busybox-static runc crun hyperfine iproute2 procps util-linux gcc pkg-config python3-venv python3-dev \
                libseccomp-dev podman containerd skopeo umoci docker-registry debootstrap apache2-utils zstd

.PHONY: all setup apt venv build cargo-test pytest test demo bench bench-exec clean

all: build

# System packages the tests and benchmarks use; skipped when all are present.
apt:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "apt-get install$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi
	@command -v cargo >/dev/null || { echo "cargo (Rust) is required: install it with rustup" >&2; exit 1; }

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

venv: $(PY)
	$(PY) -m pip install -q "maturin>=1.5,<2" "pytest>=8" "cryptography>=42" "zstandard>=0.22"
	@# setuptools' distutils-precedence.pth costs every capsa-runtime start ~2 ms; nothing here needs it.
	@$(PY) -m pip uninstall -q -y setuptools 2>/dev/null || true

# The extension in release mode, installed into the venv with the console scripts.
build: venv
	VIRTUAL_ENV=$(abspath $(VENV)) $(VENV)/bin/maturin develop --release -q
	@# Native binaries (maturin builds only the extension): the runc-compatible runtime and the
	@# container monitor; capsa finds them on PATH or next to python.
	cargo build --release -q -p capsa-runtime -p capsa-monitor
	install -m 755 target/release/capsa-runtime target/release/capsa-monitor $(VENV)/bin/
	@# --init's reaper, linked statically so it runs in any image (bind-mounted at /dev/init).
	cargo rustc --release -q -p capsa-init -- -C target-feature=+crt-static && install -m 755 target/release/capsa-init $(VENV)/bin/capsa-init
	@# Bytecode ahead of time: start-up cost matters and PYTHONDONTWRITEBYTECODE may be set.
	$(PY) -m compileall -q python/capsa

setup: apt build

LIBPYTHON_DIR = $(shell $(PY) -c 'import sysconfig; print(sysconfig.get_config_var("LIBDIR"))')

# cargo test links libpython (the extension-module feature is maturin's alone).
cargo-test: venv
	PYO3_PYTHON=$(abspath $(PY)) LD_LIBRARY_PATH=$(LIBPYTHON_DIR) cargo test --workspace -q

pytest: build
	$(VENV)/bin/pytest -q tests

test: setup cargo-test pytest

demo: setup
	PATH=$(abspath $(VENV))/bin:$$PATH $(PY) -m capsa.demo

bench: setup
	PATH=$(abspath $(VENV))/bin:$$PATH $(PY) benches/start_latency.py

# podman and containerd with capsa-runtime vs runc as their OCI runtime.
.PHONY: bench-engines
bench-engines: setup
	$(PY) benches/engines.py --runs 20

# Layer extraction: capsa vs tar -xzf vs umoci unpack (debootstraps its layer once, cached in /var/tmp/capsa-bench).
.PHONY: bench-extract
bench-extract: setup
	$(PY) benches/extract.py --runs 10
bench-exec: setup
	PATH=$(abspath $(VENV))/bin:$$PATH $(PY) benches/exec_latency.py --runs 50

clean:
	rm -rf $(VENV) target

# Pull of a 4-layer Debian image from a local registry: capsa vs skopeo+umoci vs podman.
.PHONY: bench-pull
bench-pull: setup
	PATH=$(abspath $(VENV))/bin:$$PATH $(PY) benches/pull.py

# capsa run --rm IMAGE true vs podman run --rm --network none IMAGE true (runc, private storage), same image.
.PHONY: bench-run
bench-run: setup
	PATH=$(abspath $(VENV))/bin:$$PATH $(PY) benches/run_latency.py --runs 30

# Resident memory of capsa-monitor per detached container (and of podman's conmon, side by side).
.PHONY: bench-monitor
bench-monitor: setup
	PATH=$(abspath $(VENV))/bin:$$PATH $(PY) benches/monitor_memory.py --containers 10

# capsa ps -a vs podman ps -a with 200 created containers (runc, private storage), same image.
.PHONY: bench-ps
bench-ps: setup
	PATH=$(abspath $(VENV))/bin:$$PATH $(PY) benches/ps_many.py --containers 200

# runc's own integration suite (v1.1.5 bats files) against capsa-runtime: RUNC_SRC is a runc checkout
# at tag v1.1.5, kept outside the project; FILES="run.bats exec.bats" picks files. Table per file.
.PHONY: conformance
conformance: build
	@test -n "$(RUNC_SRC)" || { echo "make conformance: set RUNC_SRC to a runc v1.1.5 checkout" >&2; exit 2; }
	RUNC_SRC=$(RUNC_SRC) bash tests/conformance/runc-bats.sh $(abspath $(VENV))/bin/capsa-runtime $(FILES)
