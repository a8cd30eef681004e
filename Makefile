# `make demo` and `make test` bootstrap everything they need: the virtualenv in .venv/ (pip) and
# the ARM toolchain + QEMU (apt) when missing.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
APT_PKGS := gcc-arm-none-eabi libnewlib-arm-none-eabi qemu-system-arm
DEMO_OUT ?= demo_out
JOBS   ?= 1

.PHONY: all venv toolchain test demo demo-vww bench clean

all: test

$(STAMP): requirements.txt setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -r requirements.txt
	$(PY) -m pip install --no-deps --no-build-isolation -e .
	touch $(STAMP)

venv: $(STAMP)

# apt packages for the deploy path (arm-none-eabi-gcc, newlib, qemu-system-arm), only when missing
toolchain:
	@missing=""; \
	command -v arm-none-eabi-gcc >/dev/null || missing=1; \
	command -v qemu-system-arm >/dev/null || missing=1; \
	[ -d /usr/lib/arm-none-eabi/newlib ] || [ -d /usr/lib/arm-none-eabi/lib ] || missing=1; \
	if [ -n "$$missing" ]; then \
	  echo "installing $(APT_PKGS)"; \
	  $(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(APT_PKGS); \
	fi

test: $(STAMP) toolchain
	$(PY) -m pytest -q tests

demo: $(STAMP) toolchain
	$(PY) tools/demo.py --out $(DEMO_OUT)

# Visual Wake Words: synthetic person / no-person data -> mcunet-vww0 -> int8 -> firmware on QEMU
demo-vww: $(STAMP) toolchain
	$(PY) tools/demo_vww.py --out $(DEMO_OUT)

bench: $(STAMP) toolchain
	@for b in benchmarks/*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf out build runs demo_out bench_out .pytest_cache
