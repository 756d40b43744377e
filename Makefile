# Two commands matter: `make demo` runs the product on a local control plane, `make test` runs every test tier.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: venv lint test unit e2e real bench tools images demo down docs metrics-example clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q -U pip

# Every distribution of the repo (partitioner, operator, images with their own code), installed editable.
DISTS := contract partitioner operator $(patsubst %/pyproject.toml,%,$(wildcard images/*/pyproject.toml))

venv: $(BIN)/python
	$(BIN)/pip install -q -r requirements-dev.txt $(addprefix -e ,$(DISTS))

lint: venv tools
	$(BIN)/ruff check partitioner operator images tests benchmarks hack docs contract
	$(BIN)/lint-imports
	.cache/bin/helm lint charts/elastic-df --strict

# Regenerate the CRDs, the chart's CRD copies and docs/crd-reference.md after changing operator/.../api.py.
docs: venv
	$(BIN)/python -m elasticdf_operator.crdgen
	$(BIN)/python -m elasticdf_operator.docgen

metrics-example: tools
	$(BIN)/python docs/metrics_example.py

unit: venv
	$(BIN)/pytest -q tests/unit

tools: venv
	hack/build-tools.sh

# Container images from images/*/Dockerfile on a local Debian base (buildah, no registry): .cache/images/<name>.tar
images:
	hack/images.sh

e2e: tools
	$(BIN)/pytest -q tests/e2e

# Real kubelet nodes (root, cgroup v1): installs the node packages and builds the node programs when missing.
real: tools
	$(BIN)/pytest -q tests/real

test: lint
	hack/run-pytest.sh $(BIN)/pytest -q tests

demo: tools
	hack/demo.sh

# Stops the demo's port-forward, the real nodes (restoring the host) and the control plane.
down:
	hack/dev-cluster.sh down

bench: venv
	for b in benchmarks/*.py; do $(BIN)/python $$b || exit 1; done

clean:
	-hack/dev-cluster.sh down
	rm -rf $(VENV) .cache
