# skiff: `make help` lists the targets. Most need Go 1.26; test and demo need root.

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help
MAKEFLAGS += --no-print-directory

# Go from the official tarball lives in /usr/local/go/bin, which a fresh root shell does
# not have on PATH: use it when no go is on PATH. Pinned test tools go to bin/tools, which
# tests find on PATH.
TOOLS_BIN := $(CURDIR)/bin/tools
GO_ON_PATH := $(shell command -v go 2>/dev/null)
export PATH := $(TOOLS_BIN):$(PATH)$(if $(GO_ON_PATH),,$(if $(wildcard /usr/local/go/bin/go),:/usr/local/go/bin))

GO_MIN   := 1.26
VERSION  ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
BIN      := bin/skiff
IMAGE    ?= skiff:$(VERSION)
FUZZTIME ?= 30s
TEST_LOG := bin/test.log
# Packages make test runs; narrow it while working, e.g. make test PKGS=./config/...
PKGS     ?= ./...

# Debian/Ubuntu packages the tests need: iptables (nft and legacy), ip and network
# namespaces, real clients (curl, nghttp and h2load from nghttp2-client), unshare and
# setpriv (util-linux), and a C toolchain for the race detector (go test -race needs cgo).
TEST_APT_PACKAGES := iptables iproute2 curl ca-certificates util-linux nghttp2-client gcc libc6-dev

# Go tools the tests run, pinned, as module/path/cmd/name@version, installed from the
# module proxy into bin/tools (on PATH for the tests) and reinstalled when the pinned
# version changes. None are needed yet; an entry looks like
# github.com/summerwind/h2spec/cmd/h2spec@v2.2.1+incompatible (a module without a go.mod,
# like that one, gets its own dependencies at their newest versions).
TEST_GO_TOOLS := github.com/summerwind/h2spec/cmd/h2spec@v2.2.1+incompatible

.PHONY: help build test deps-test check-go lint fuzz demo bench bench-go image clean

help: ## show this help
	@echo "skiff $(VERSION): targets (run as root where marked)"
	@awk 'BEGIN {FS = ":.*## "} /^[a-z][a-z-]*:.*## / {printf "  %-10s %s\n", $$1, $$2}' $(MAKEFILE_LIST)
	@echo
	@echo "variables: VERSION=$(VERSION) IMAGE=$(IMAGE) FUZZTIME=$(FUZZTIME) PKGS=$(PKGS)"

check-go:
	@if ! command -v go >/dev/null 2>&1; then \
		echo "make: Go is not installed. skiff needs Go $(GO_MIN) or newer:" >&2; \
		echo "      download it from https://go.dev/dl/ and unpack it into /usr/local (giving /usr/local/go/bin/go)." >&2; \
		exit 1; \
	fi
	@v=$$(go env GOVERSION); v=$${v#go}; major=$${v%%.*}; rest=$${v#*.}; minor=$${rest%%.*}; minor=$${minor%%[!0-9]*}; \
	if [ "$$major" -lt 1 ] || { [ "$$major" -eq 1 ] && [ "$$minor" -lt $(word 2,$(subst ., ,$(GO_MIN))) ]; }; then \
		echo "make: Go $$v is too old: skiff needs Go $(GO_MIN) or newer (https://go.dev/dl/)." >&2; \
		exit 1; \
	fi

build: check-go ## build a static bin/skiff (version from git describe, else "dev")
	@mkdir -p bin
	CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=$(VERSION)" -o $(BIN) .
	@go version -m $(BIN) | grep -q 'CGO_ENABLED=0' || { echo "build: $(BIN) was not built with CGO_ENABLED=0" >&2; exit 1; }
	@if command -v file >/dev/null 2>&1 && ! file -L $(BIN) | grep -q 'statically linked'; then \
		echo "build: $(BIN) is not statically linked:" >&2; file -L $(BIN) >&2; exit 1; \
	fi
	@echo "build: $(BIN) $$($(BIN) version | cut -d' ' -f2), static"

deps-test: check-go ## install what the tests need (root, Debian/Ubuntu): apt packages, pinned Go tools
	@if ! command -v dpkg-query >/dev/null 2>&1; then \
		echo "deps-test: not a Debian/Ubuntu system: make sure these (or their equivalents) are installed: $(TEST_APT_PACKAGES)" >&2; \
	else \
		missing=""; \
		for p in $(TEST_APT_PACKAGES); do \
			dpkg-query -W -f='$${Status}\n' "$$p" 2>/dev/null | grep -qx 'install ok installed' || missing="$$missing $$p"; \
		done; \
		if [ -z "$$missing" ]; then \
			echo "deps-test: apt packages present ($(TEST_APT_PACKAGES))"; \
		else \
			if [ "$$(id -u)" != 0 ]; then echo "deps-test: missing packages:$$missing; run as root to install them" >&2; exit 1; fi; \
			echo "deps-test: installing$$missing"; \
			export DEBIAN_FRONTEND=noninteractive; \
			apt-get update; \
			apt-get install -y --no-install-recommends $$missing; \
		fi; \
	fi
	@for tool in $(TEST_GO_TOOLS); do \
		pkg=$${tool%@*}; ver=$${tool##*@}; name=$${pkg##*/}; \
		have=$$({ go version -m "$(TOOLS_BIN)/$$name" 2>/dev/null || true; } | awk '$$1 == "mod" {print $$3}'); \
		if [ "$$have" != "$$ver" ]; then \
			echo "deps-test: installing $$tool into bin/tools"; \
			GOBIN="$(TOOLS_BIN)" go install "$$tool"; \
		fi; \
	done

lint: check-go ## gofmt (fails on any unformatted file) and go vet
	@echo "== gofmt -l"
	@out=$$(gofmt -l .); if [ -n "$$out" ]; then echo "gofmt: these files need gofmt -w:" >&2; echo "$$out" >&2; exit 1; fi
	@echo "== go vet ./..."
	@go vet ./...

# Tests of allocation counts and memory budgets (skipped under -race).
ALLOC_TESTS := Alloc|Allocate|IdleRelayMemory

test: deps-test ## as root: lint, then go test -race on every package (< 15 min)
	@if [ "$$(id -u)" != 0 ]; then echo "make test: run as root: the tests create network namespaces and iptables rules" >&2; exit 1; fi
	@$(MAKE) lint
	@echo "== go test -race -count=1 -timeout 14m $(PKGS)   (full log: $(TEST_LOG))"
	@mkdir -p bin; start=$$(date +%s); \
	set +e; \
	CGO_ENABLED=1 go test -race -count=1 -timeout 14m -v $(PKGS) 2>&1 | tee $(TEST_LOG) | grep --line-buffered -Ev '^=== (RUN|PAUSE|CONT|NAME)'; \
	rc=$${PIPESTATUS[0]}; set -e; \
	pass=$$(grep -c '^--- PASS' $(TEST_LOG) || true); fail=$$(grep -c '^--- FAIL' $(TEST_LOG) || true); \
	skip=$$(grep -c '^--- SKIP' $(TEST_LOG) || true); sub=$$(grep -cE '^ +--- (PASS|FAIL|SKIP)' $(TEST_LOG) || true); \
	pkgs=$$(grep -cE '^(ok|FAIL)[[:space:]]+skiff' $(TEST_LOG) || true); \
	summary="$$pass passed, $$fail failed, $$skip skipped (top-level tests; $$sub subtests) in $$pkgs packages, $$(( $$(date +%s) - start ))s"; \
	if [ "$$rc" != 0 ]; then \
		echo; grep -E '^(--- FAIL|FAIL)' $(TEST_LOG) || true; \
		echo "make test: FAIL: $$summary (go test exit status $$rc)"; exit 1; \
	fi; \
	if [ "$$pass" = 0 ]; then echo "make test: FAIL: no test ran"; exit 1; fi; \
	echo "make test: PASS: $$summary"
	@# The race detector changes allocation counts and stack sizes, so the tests that
	@# assert them skip under -race: they run again here without it.
	@echo "== go test -count=1 -run '$(ALLOC_TESTS)' (allocation and memory budgets, no -race)"
	@out=$$(go test -count=1 -v -run '$(ALLOC_TESTS)' ./listener/... ./router/... 2>&1); rc=$$?; \
	echo "$$out" | grep -E '^(--- |ok|FAIL)' ; \
	if [ "$$rc" != 0 ]; then echo "make test: FAIL: allocation budgets"; exit 1; fi; \
	if ! echo "$$out" | grep -q '^--- PASS'; then echo "make test: FAIL: no allocation test ran"; exit 1; fi

fuzz: check-go ## run every fuzz target for FUZZTIME each (default 30s)
	@targets=$$(go test -list '^Fuzz' ./... | awk '/^Fuzz/ {names = names " " $$1; next} /^ok/ {n = split(names, a, " "); for (i = 1; i <= n; i++) print $$2, a[i]; names = ""}'); \
	if [ -z "$$targets" ]; then echo "fuzz: no fuzz targets found"; exit 0; fi; \
	while read -r pkg name; do \
		echo "== $$pkg $$name ($(FUZZTIME))"; \
		go test -run '^$$' -fuzz "^$$name\$$" -fuzztime $(FUZZTIME) "$$pkg"; \
	done <<< "$$targets"

demo: build ## as root: a two-workload mesh in network namespaces, then clean up
	@scripts/demo.sh $(BIN)

bench: check-go ## as root: skiff vs direct, HAProxy, nginx side by side (BENCH_QUICK=1: ~3 min; see bench/README.md)
	@bash bench/run.sh

# The packages whose hot paths have go test benchmarks, and how long each one runs.
BENCH_PKGS ?= ./listener/... ./router/...
BENCHTIME  ?= 100ms

bench-go: check-go ## go test benchmarks of the hot paths with allocs/op (~15 s; BENCHTIME=100ms)
	go test -run '^$$' -bench . -benchmem -benchtime $(BENCHTIME) $(BENCH_PKGS)

image: ## build the container image skiff:VERSION (needs a running Docker engine)
	@if ! docker info >/dev/null 2>&1; then \
		echo "image: no Docker engine reachable here; on a machine with one, run: make image" >&2; exit 1; \
	fi
	docker build --build-arg VERSION=$(VERSION) -t $(IMAGE) .

clean: ## remove bin/ (the binary, the test log and pinned tools) and dist/
	rm -rf bin dist
