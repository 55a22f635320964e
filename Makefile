# Two commands do all the set-up:  `make lab`  opens the workbook;  `make test`  runs every test.
# Both install what they need first (once; again only when pyproject.toml changes).

PYTHON ?= python3
PIP := $(PYTHON) -m pip
# A plain `pip install torch` on Linux pulls a multi-GB CUDA build; the CPU build is enough here.
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu
STAMP := .llama_edu_installed
LAB_ARGS ?=
# Jupyter refuses to run as root (common in containers) unless told it is deliberate.
ROOT_FLAG := $(if $(filter 0,$(shell id -u 2>/dev/null)),--allow-root)
PYTEST_ARGS ?=

.PHONY: lab lab-zh test install student lint determinism

install: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c "import torch" 2>/dev/null || \
		$(PIP) install torch --index-url $(TORCH_INDEX) || \
		{ echo "Could not reach $(TORCH_INDEX); installing torch from PyPI instead."; $(PIP) install torch; }
	$(PIP) install -e ".[dev]"
	@$(PYTHON) -c "import llama_edu, torch, nbval; print('llama_edu ready, torch', torch.__version__)"
	@touch $(STAMP)

lab: install
	$(PYTHON) -m jupyter lab notebooks/00_welcome.ipynb $(ROOT_FLAG) $(LAB_ARGS)

# The Chinese edition (notebooks_zh/, built by tools/make_edition.py; see README.zh-CN.md).
lab-zh: install
	LLAMA_EDU_LANG=zh $(PYTHON) -m jupyter lab notebooks_zh/00_welcome.ipynb $(ROOT_FLAG) $(LAB_ARGS)

test: install
	$(PYTHON) -m ruff check .
	$(PYTHON) -m pytest $(PYTEST_ARGS)

student: install
	llama-edu student student_notebooks

# Strict nbval three times in a row: every stored output must come out the same each time.
determinism: install
	for run in 1 2 3; do echo "nbval run $$run of 3"; $(PYTHON) -m pytest notebooks -q || exit 1; done

lint: install
	$(PYTHON) -m ruff check .
