# signoff — see README.md. Cargo's target directory and the control-plane binaries
# are cached outside the clone so a fresh clone (and CI) does not rebuild them.
SHELL := /bin/bash
# One target directory per checkout (hack/target-dir.sh: keyed by the checkout's
# path, seeded from another checkout's so a fresh clone reuses its dependencies).
ifeq ($(origin CARGO_TARGET_DIR),undefined)
CARGO_TARGET_DIR := $(shell $(CURDIR)/hack/target-dir.sh)
endif
ifeq ($(CARGO_TARGET_DIR),)
$(error hack/target-dir.sh printed no target directory; set CARGO_TARGET_DIR)
endif
export CARGO_TARGET_DIR
CARGO ?= cargo

.PHONY: test test-cluster node dev crds chart-policies image controlplane flux argocd prometheus dex browser screenshots dashboard-picture chart fmt-check lint unit-and-integration help chaos fuzz bench bench-peers print-target-dir

help:
	@echo "make dev    local control plane with signoff, demo teams and people (Ctrl-C stops it)"
	@echo "make test   fmt check, clippy -D warnings, unit and integration tests against a real apiserver"
	@echo "make crds   regenerate crds/ and charts/signoff/files/crds/ from the Rust types"
	@echo "make fuzz   run each cargo-fuzz target for FUZZ_SECONDS (default 60) from fuzz/corpus; not part of make test"
	@echo "make chaos  long adversarial, crash, load and rotation runs; one table of figures into docs/security.md"
	@echo "make image  the container image as an OCI archive (static binaries, no registry needed)"
	@echo "make test-cluster  helm install onto a real single-node cluster (kubelet, containerd; root), part of make test"
	@echo "make screenshots  re-take docs/images/ (the web queue) from tests/ui.rs in headless Chromium"
	@echo "make dashboard-picture  render docs/img/dashboard.png from a real run scraped by Prometheus"
	@echo "make bench  benchmarks with same-run baselines, one table (about 15 min); see docs/performance.md"
	@echo "make bench-peers  make bench with Kyverno (built from Go modules on first use) as a fourth group"

## The whole suite: what CI runs (.ci/run).
test: fmt-check lint controlplane node flux argocd prometheus dex browser chart unit-and-integration

fmt-check:
	$(CARGO) fmt --all --check

lint:
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings

# Builds kube-apiserver, kube-controller-manager, kubectl and etcd from Go modules on
# first use (progress is shown), then reuses them. Honours KUBEBUILDER_ASSETS.
controlplane:
	@hack/controlplane/build.sh >/dev/null

# Builds kubelet, kube-scheduler and kube-proxy from Go modules on first use (hack/node),
# for tests/cluster.rs; the Debian packages a node needs are installed if missing.
node:
	@NODE_BUILD_JOBS=$${NODE_BUILD_JOBS:-2} hack/node/build.sh >/dev/null && hack/node/deps.sh

# Builds Flux's source-controller and kustomize-controller from Go modules on first use
# (hack/peers/flux; both cores: nothing else runs yet), for tests/gitops_flux.rs.
flux:
	@FLUX_BUILD_JOBS=$${FLUX_BUILD_JOBS:-2} hack/peers/flux/build.sh >/dev/null && hack/peers/flux/crds.sh >/dev/null

# Builds Argo CD's application controller and repo server (v3.2.11, one multi-call binary)
# from Go modules on first use (hack/peers/argocd), for tests/gitops_argocd_e2e.rs, and
# fetches its CRDs; Redis comes from Debian's packages (the test installs it if missing).
argocd:
	@ARGOCD_BUILD_JOBS=$${ARGOCD_BUILD_JOBS:-2} hack/peers/argocd/build.sh >/dev/null && hack/peers/argocd/crds.sh >/dev/null

# Builds promtool and prometheus from Go modules on first use (hack/peers/prometheus),
# for tests/metrics.rs (promtool checks and unit-tests the alert rules).
prometheus:
	@PROMETHEUS_BUILD_JOBS=$${PROMETHEUS_BUILD_JOBS:-2} hack/peers/prometheus/build.sh >/dev/null

# Builds Dex (the OIDC provider) from Go modules on first use (hack/peers/dex), for
# tests/ui.rs: people sign in to the in-cluster web queue with it.
dex:
	@DEX_BUILD_JOBS=$${DEX_BUILD_JOBS:-2} hack/peers/dex/build.sh >/dev/null

# Debian's Chromium and chromedriver, for the browser tests (tests/ui.rs).
browser:
	@hack/browser/deps.sh

# Re-takes the web queue's pictures in docs/images/ (docs/approving.md) from the browser test.
screenshots: controlplane dex browser
	UPDATE_SCREENSHOTS=1 $(CARGO) test --locked --test ui bob_approves -- --nocapture

# The container image as an OCI archive, built without pulling anything (static musl
# binaries, umoci): $(CARGO_TARGET_DIR)/image/signoff-<version>.oci.tar.
image:
	@hack/image/build.sh

# signoff installed by its chart onto a real single-node cluster (hack/node: kubelet,
# kube-scheduler, kube-proxy from Go modules; containerd, runc, CNI from Debian), the
# walk of docs/operations.md "Step by step". Needs root. Also part of make test.
test-cluster: controlplane
	$(CARGO) test --locked --test cluster -- --nocapture

# Renders docs/img/dashboard.png from a real run scraped by a real Prometheus
# (hack/dashboard; docs/operations.md says how). Not part of make test.
dashboard-picture: prometheus
	@hack/dashboard/render.sh

# Builds helm from Go modules on first use (hack/helm), then lints the chart and renders
# it in both webhook ownership modes. tests/chart.rs applies the rendering to the real
# control plane (server-side dry run) and pins its RBAC rules.
chart:
	@helm=$$(HELM_BUILD_JOBS=$${HELM_BUILD_JOBS:-2} hack/helm/build.sh) && \
	"$$helm" lint --strict charts/signoff && \
	"$$helm" lint --strict charts/signoff --set webhook.managedBy=chart && \
	"$$helm" template signoff charts/signoff --namespace signoff-system >/dev/null && \
	"$$helm" template signoff charts/signoff --namespace signoff-system --set webhook.managedBy=chart \
	  --set serviceMonitor.enabled=true >/dev/null && \
	"$$helm" template signoff charts/signoff --namespace signoff-system --set webhook.managedBy=chart \
	  --set tls.source=secret --set tls.secretName=signoff-tls --set tls.caBundle=Cg== >/dev/null && \
	echo "chart: helm lint and helm template (managedBy signoff and chart) pass"

# --show-output prints what each integration test saw from the real apiserver.
unit-and-integration:
	$(CARGO) test --workspace --locked --all-targets -- --show-output

# The long versions of the chaos tests (SIGNOFF_CHAOS=1), one at a time, then one
# table of their figures, printed and written into docs/security.md. Stale figures
# from earlier runs are removed first (tests/common/report.rs writes them there).
# The table is printed even when a test fails (figures are recorded before the
# asserts); make still fails then.
chaos: controlplane
	rm -rf "$(CARGO_TARGET_DIR)/tmp/signoff-report"
	status=0; \
	SIGNOFF_CHAOS=1 $(CARGO) test --locked --test adversarial_status --test crash --test load --test rotation_e2e \
	  --test escalation --test webhook \
	  -- --show-output --test-threads=1 || status=$$?; \
	SIGNOFF_CHAOS=1 SIGNOFF_UPDATE_DOCS=1 $(CARGO) test --locked --test chaos_report -- --ignored --nocapture \
	  || status=$$?; \
	exit $$status

# Benchmarks (issue 11). So far: classification (criterion), against a naive use
# of the cel crate and a no-policy baseline measured in the same run. Figures and
# what limits them: docs/performance.md.
bench: controlplane
	$(CARGO) bench --locked --bench classify -- --warm-up-time 1 --measurement-time 3
	$(CARGO) bench --locked --bench e2e

## make bench with Kyverno as a fourth group (built from Go modules on first use:
## about 25 minutes; cached in ~/.cache/signoff/peers).
bench-peers: controlplane
	$(CARGO) bench --locked --bench classify -- --warm-up-time 1 --measurement-time 3
	kyverno=$$(hack/peers/kyverno/build.sh) && \
	src=$$(cd hack/peers/kyverno && GOTOOLCHAIN=local GOFLAGS=-mod=mod go list -m -f '{{.Dir}}' github.com/kyverno/kyverno) && \
	SIGNOFF_BENCH_KYVERNO=$$kyverno/kyverno SIGNOFF_BENCH_KYVERNO_SRC=$$src $(CARGO) bench --locked --bench e2e

# This checkout's Cargo target directory (see hack/target-dir.sh).
print-target-dir:
	@echo "$(CARGO_TARGET_DIR)"

crds:
	$(CARGO) run --quiet --locked --bin signoff -- crds --dir crds --dir charts/signoff/files/crds

# The chart's copy of the policy library (tests/chart.rs fails when it differs).
chart-policies:
	rm -f charts/signoff/files/policies/*.yaml && cp policies/*.yaml charts/signoff/files/policies/

dev: controlplane
	$(CARGO) build --locked --workspace --bin signoff --bin kubectl-signoff --bin signoff-dev
	exec "$(CARGO_TARGET_DIR)/debug/signoff-dev" --root "$(CURDIR)"

# cargo-fuzz targets (fuzz/README.md), not part of `make test`: installs cargo-fuzz
# into ~/.cache/signoff on first use, builds with nightly into its own target dir,
# runs each target for FUZZ_SECONDS and fails if any crashed.
FUZZ_SECONDS ?= 60
fuzz:
	FUZZ_SECONDS=$(FUZZ_SECONDS) fuzz/run.sh
