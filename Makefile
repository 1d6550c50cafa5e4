# sockrelay. `make help` lists the targets.
PLUGIN_NAME ?= sockrelay
PLUGIN_TAG  ?= latest
PLUGIN      := $(PLUGIN_NAME):$(PLUGIN_TAG)
VERSION     ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT      ?= $(shell git rev-parse HEAD 2>/dev/null)
GO          ?= go
LDFLAGS     := -s -w -X main.version=$(VERSION) -X main.commit=$(COMMIT)
export CGO_ENABLED = 0

.PHONY: help build plugin-rootfs test e2e e2e-29 check fuzz bench bench-build bench-test plugin install push uninstall demo dockerd engine clean

help:
	@echo "build    bin/sockrelay, a static binary"
	@echo "test     unit and integration tests (no root, no Docker)"
	@echo "check    test, bench-test, fuzz briefly, then e2e: every test (what CI runs)"
	@echo "e2e      end-to-end suite against a userns-remapped dockerd (root); installs the plugin"
	@echo "plugin   assemble plugin/ offline and docker plugin create $(PLUGIN)"
	@echo "install  plugin, then enable it, replacing an older install"
	@echo "push     REGISTRY=host:port: plugin named REGISTRY/$(PLUGIN_NAME), then docker plugin push"
	@echo "bench    the installed plugin's relay, policy and idmap volumes beside direct, serve, socat (root; a daemon of its own)"
	@echo "bench-build docker buildx build with a 100 MiB context through idmap, relay, full and no-escalation volumes (root)"
	@echo "bench-test the bench harness's tests, a whole brief run included (root for every column)"
	@echo "demo     on a fresh Debian host as root: install Docker, start a remapped dockerd, install, demo"
	@echo "engine   build and cache Docker Engine 29, runc, Compose v2 and buildx from their Go modules (ENGINE_CACHE)"

build:
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/sockrelay ./cmd/sockrelay

test: build
	@unformatted=$$(gofmt -l cmd internal e2e); test -z "$$unformatted" || { echo "gofmt -w these first:" $$unformatted >&2; exit 1; }
	$(GO) vet ./...
	scripts/doclinks.sh
	CGO_ENABLED=1 $(GO) test -race -count=1 ./...

# The rootfs: the static binary and the empty directories it mounts on.
# The Dockerfile builds the same (scripts/dockerfile-check.sh).
ROOTFS ?= plugin/rootfs
plugin-rootfs: build
	rm -rf $(ROOTFS)
	mkdir -p $(ROOTFS)/mnt/volumes $(ROOTFS)/host/run $(ROOTFS)/host/etc $(ROOTFS)/host/log \
	         $(ROOTFS)/run/docker/plugins $(ROOTFS)/etc $(ROOTFS)/proc $(ROOTFS)/dev \
	         $(ROOTFS)/sys $(ROOTFS)/tmp
	cp bin/sockrelay $(ROOTFS)/sockrelay

plugin: plugin-rootfs
	cp config.json plugin/config.json
	scripts/plugin.sh create $(PLUGIN) plugin

install: plugin
	scripts/plugin.sh enable $(PLUGIN)

# Push the plugin to a registry, to be installed elsewhere with
#   docker plugin install --alias sockrelay REGISTRY/sockrelay:latest
REGISTRY ?=
push:
	@test -n "$(REGISTRY)" || { echo "usage: make push REGISTRY=host:port" >&2; exit 1; }
	$(MAKE) --no-print-directory plugin PLUGIN_NAME=$(REGISTRY)/$(PLUGIN_NAME)
	docker plugin push $(REGISTRY)/$(PLUGIN_NAME):$(PLUGIN_TAG)

uninstall:
	scripts/plugin.sh remove $(PLUGIN)

# The e2e suite runs against a userns-remapped daemon of its own:
# ENGINE=20.10 (Debian's docker.io) or ENGINE=29 (built by make engine).
ENGINE ?= 20.10
e2e:
	ENGINE=$(ENGINE) scripts/e2e.sh

# The tests CI runs on Engine 29 besides the whole suite on 20.10: install
# from a registry, relay, idmap and policy volumes, Compose, Swarm, upgrade,
# daemon restarts, tampering, damaged state records, buildx, BuildKit
# through no-escalation.
E2E_29_RUN ?= TestBuildx|TestBuildKit|TestPushAndInstallFromRegistry|TestPluginUpgradeKeepsVolumes|TestPingThroughVolume|TestOwnerOptions|TestIdmap|TestLiveRestore|TestPolicy|TestCompose|TestSwarmService|TestDaemonRestart|TestPluginRestartRestoresSocket|TestContainerCannotTamper|TestBadInput|TestDamagedRecords|TestLostRecordNotRebuilt|TestRecordsDirCorrupt|TestStateExportAndMigrate|TestAuto
e2e-29:
	ENGINE=29 E2E_RUN='$(E2E_29_RUN)' scripts/e2e.sh

check: test bench-test fuzz e2e e2e-29

# Each fuzz target for FUZZTIME inputs (a few seconds each); the corpora are
# in testdata/. A count, not a duration: with a duration, Go up to 1.26
# sometimes fails a target with a bare "context deadline exceeded" when the
# time runs out, having found nothing (golang/go#75804).
FUZZTIME ?= 20000x
fuzz:
	@for pkg in $$($(GO) list ./internal/...); do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz'); do \
	    echo "fuzz $$pkg $$f"; \
	    $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg || exit 1; \
	  done; \
	done

# The installed plugin's relay, policy and idmap volumes, sockrelay serve,
# socat and wollomatic/socket-proxy, each beside a direct connection, in a
# userns-remapped daemon of the bench's own (scripts/bench.sh says how to
# use another). Needs root and socat (installed when missing). BENCHFLAGS
# passes flags to cmd/srbench, e.g. BENCHFLAGS='-quick' or
# '-rounds 9 -bytes 1GiB -json bench.json'.
BENCHFLAGS ?=
bench: build
	@command -v socat >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" -eq 0 ]; then \
	    echo "bench: installing socat"; \
	    apt-get install -y socat || { apt-get update && apt-get install -y socat; } || exit 1; \
	  else \
	    echo "bench: socat is not installed; run as root, or apt-get install socat first" >&2; exit 1; \
	  fi; }
	BENCHFLAGS='$(BENCHFLAGS)' scripts/bench.sh

# docker buildx build with a 100 MiB context (BENCH_BUILD_MIB) from a
# remapped container through idmap, relay, policy=full and
# policy=no-escalation volumes, in a daemon of its own (BENCH_ENGINE,
# default 29); the medians and their ratios to idmap's. Root.
bench-build: build
	scripts/bench-build.sh

# The bench harness's tests with its slow one, a whole run with -quick's
# settings, which make test leaves out (build tag benchrun). It checks the
# report, never a figure; without socat or root it measures fewer columns.
bench-test: build
	$(GO) vet -tags benchrun ./cmd/srbench/...
	CGO_ENABLED=1 $(GO) test -race -count=1 -tags benchrun ./cmd/srbench/...

demo:
	scripts/demo.sh

dockerd:
	scripts/dockerd.sh start

# Docker Engine 29 (dockerd, docker-proxy), runc, Compose v2 and buildx,
# built from their Go modules into ENGINE_CACHE (/var/cache/sockrelay/engine);
# a second run only verifies. scripts/engine.sh start DIR runs the engine
# beside the system's daemon.
engine:
	scripts/engine.sh build

clean:
	rm -rf bin plugin
