# signoff — see README.md. Cargo's target directory and the control-plane binaries
# are cached outside the clone so a fresh clone (and CI) does not rebuild them.
SHELL := /bin/bash
export CARGO_TARGET_DIR ?= $(HOME)/.cache/signoff/target
CARGO ?= cargo

.PHONY: test dev crds controlplane fmt-check lint unit-and-integration help

help:
	@echo "make dev    local control plane with signoff, demo teams and people (Ctrl-C stops it)"
	@echo "make test   fmt check, clippy -D warnings, unit and integration tests against a real apiserver"
	@echo "make crds   regenerate crds/ and charts/signoff/crds/ from the Rust types"

## The whole suite: what CI runs (.ci/run).
test: fmt-check lint controlplane unit-and-integration

fmt-check:
	$(CARGO) fmt --check

lint:
	$(CARGO) clippy --all-targets --locked -- -D warnings

# Builds kube-apiserver, kube-controller-manager, kubectl and etcd from Go modules on
# first use (progress is shown), then reuses them. Honours KUBEBUILDER_ASSETS.
controlplane:
	@hack/controlplane/build.sh >/dev/null

# --show-output prints what each integration test saw from the real apiserver.
unit-and-integration:
	$(CARGO) test --locked --all-targets -- --show-output

crds:
	$(CARGO) run --quiet --locked --bin signoff -- crds --dir crds --dir charts/signoff/crds

dev: controlplane
	$(CARGO) build --locked --bin signoff --bin kubectl-signoff --bin signoff-dev
	exec "$(CARGO_TARGET_DIR)/debug/signoff-dev"
