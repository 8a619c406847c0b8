# Two commands on a fresh machine:  `make demo`  and  `make test`.
# Both create ./.venv (reused on later runs) and install what they need.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# llama.cpp's CPU backend for AVX2 machines, not -march=native: a native build enables AMX
# kernels that crash (SIGSEGV in ggml_backend_amx_mul_mat) on VMs that advertise AMX.
LLAMA_CMAKE_ARGS ?= $(if $(filter x86_64,$(shell uname -m)),-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON,)

.PHONY: demo test install lint bench clean browser

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch's CPU build first: a bare `torch` requirement would pull a multi-GB CUDA build.
	$(BIN)/pip install --quiet torch==2.13.0
	# llama-cpp-python compiles from source the first time (about 8 minutes on 2 cores); no
	# cached wheel is reused, since pip's cache does not know the build flags.
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(BIN)/pip install --quiet --no-cache-dir -e ".[local,server,postgres,test,mcp,ray,serve,otel]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/python samples/demo.py

# Debian's Chromium for the web console's browser tests: Playwright drives it (Playwright's own
# browser download is not used). Installed once, when missing.
browser:
	command -v chromium >/dev/null 2>&1 || { SUDO=$$([ "$$(id -u)" -eq 0 ] || echo sudo); \
	  $$SUDO apt-get update -qq && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; }

test: $(STAMP) browser
	$(BIN)/python -m pytest -q -p no:cacheprovider

lint: $(STAMP)
	$(BIN)/ruff check kernel connectors plugins tests samples
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python tests/benchmarks/run.py

clean:
	rm -rf $(VENV) .kernel
