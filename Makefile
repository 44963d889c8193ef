# mcpgateway: `make help` lists the targets.
SHELL := /bin/bash
GO    ?= go
BIN   := bin/mcpgateway
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X main.version=$(VERSION)
# The process-level tests and the supervisor/worker packages also run under the race detector.
RACE_PKGS := ./supervisor/... ./worker/...
FUZZTIME ?= 5s

.PHONY: help build serve serve-granian test test-unit test-race fuzz lint services tools hey clean

help: ## list the targets
	@awk 'BEGIN{FS=":.*## "} /^[a-zA-Z0-9_-]+:.*## /{printf "  %-22s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

build: ## build bin/mcpgateway (static, no cgo)
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/mcpgateway

.env:
	@cp .env.example .env && echo "created .env from .env.example (JWT_SECRET_KEY=my-test-key: for development only)"

serve: build .env ## run the gateway (HTTP_SERVER=gunicorn profile) on 0.0.0.0:4444 with SQLite
	HTTP_SERVER=gunicorn ./$(BIN) serve

serve-granian: build .env ## run the gateway with the granian profile (backpressure 512 per worker)
	HTTP_SERVER=granian ./$(BIN) serve

test: services lint ## run every test: unit, process-level (real binary, signals), race, fuzz
	$(GO) test -count=1 ./...
	$(GO) test -count=1 -race $(RACE_PKGS)
	$(MAKE) --no-print-directory fuzz

test-unit: ## the tests without the race and fuzz passes
	$(GO) test ./...

fuzz: ## run each fuzz target for FUZZTIME (default 5s)
	@set -e; for target in $$(grep -rhoE '^func Fuzz[A-Za-z0-9_]+' --include='*_test.go' . | sed 's/^func //' | sort -u); do \
	  pkg=$$(grep -rlE "^func $$target\(" --include='*_test.go' . | head -1 | xargs dirname); \
	  echo "fuzz $$target ($$pkg, $(FUZZTIME))"; \
	  $(GO) test -run '^$$' -fuzz "^$$target$$" -fuzztime $(FUZZTIME) $$pkg >/dev/null; \
	done

lint: ## gofmt and go vet
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

services: ## make sure PostgreSQL and Redis run on 127.0.0.1 (install/start them if needed)
	@bash .ci/services.sh

tools: ## install hey and wrk (load generators) with apt-get when missing
	@command -v hey >/dev/null && command -v wrk >/dev/null || { \
	  s=; [ "$$(id -u)" = 0 ] || s=sudo; $$s apt-get update -qq && $$s apt-get install -y -qq hey wrk >/dev/null; }

hey: build tools ## mint a token and run the guide's hey load (tests/hey.sh) against a running server
	@./$(BIN) token -u "$${PLATFORM_ADMIN_EMAIL:-admin@example.com}" -e 60 > jwt.txt
	bash tests/hey.sh

clean: ## remove build output and the local SQLite database
	rm -rf bin mcp.db mcp.db-shm mcp.db-wal jwt.txt
