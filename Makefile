# The two quickstart commands: `make bench` (the default benchmark) and `make test`.
# Both set up what they need first (scripts/setup.sh), in the active venv or in .venv/.
PYTHON := $(if $(VIRTUAL_ENV),$(VIRTUAL_ENV)/bin/python,.venv/bin/python)

.PHONY: bench test setup speed
# exit status 3 = the sweep finished and wrote its report, but the verdict is not ready (some runs
# did not converge at this budget: REPORT.md's banner lists them and gives the command for more)
bench:
	@bash scripts/setup.sh run
	@$(PYTHON) -m medsegloss bench $(ARGS); status=$$?; \
	  if [ $$status -eq 3 ]; then echo "make bench: report written; its verdict is not ready (see the banner of REPORT.md)"; \
	  else exit $$status; fi

test:
	@bash scripts/setup.sh test
	$(PYTHON) -m pytest $(ARGS)

setup:
	@bash scripts/setup.sh test

# speed of every loss against F.cross_entropy and the peers (README table)
speed:
	@bash scripts/setup.sh test
	$(PYTHON) benchmarks/losses.py $(ARGS)
