# mcpgateway: `make help` lists the targets.
SHELL := /bin/bash
GO    ?= go
BIN   := bin/mcpgateway
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X main.version=$(VERSION)
# The process-level tests and the supervisor/worker packages also run under the race detector.
RACE_PKGS := ./supervisor/... ./worker/... ./upstream/... ./internal/ratelimit/...
FUZZTIME ?= 5s

# TLS for the *-ssl targets: `make certs` writes a self-signed pair here.
CERT_DIR  := certs
TLS_ENV   := SSL=true CERT_FILE=$(CERT_DIR)/cert.pem KEY_FILE=$(CERT_DIR)/key.pem
# HTTP/2 for serve-granian-http2, as the Python gateway's Makefile does it.
GRANIAN_HTTP := 2

# Containers: podman or docker, whichever answers (CONTAINER_ENGINE=docker to choose).
# Override on the command line: make container-run IMAGE=... CONTAINER_PORT=8443
IMAGE          := mcpgateway/mcpgateway:latest
CONTAINER_NAME := mcpgateway
CONTAINER_PORT := 4444
CONTAINER_RUN  := run --rm --name $(CONTAINER_NAME) -p $(CONTAINER_PORT):4444 --env-file .env
# The image runs as uid 65532; the *-ssl targets mount ./certs read-only and
# run as the invoking user (podman: --userns=keep-id), so that a key.pem only
# its owner may read is readable in the container too.
CONTAINER_CERTS := -v $(CURDIR)/$(CERT_DIR):/certs:ro,z -e SSL=true -e CERT_FILE=/certs/cert.pem -e KEY_FILE=/certs/key.pem

.PHONY: help build serve serve-granian serve-ssl serve-granian-ssl serve-granian-http2 certs \
	test test-unit test-race fuzz lint smoke bench services tools mcp-servers hey clean \
	container-build container-run container-run-gunicorn container-run-granian \
	container-run-gunicorn-ssl container-run-granian-ssl

help: ## list the targets
	@awk 'BEGIN{FS=":.*## "} /^[a-zA-Z0-9_-]+:.*## /{printf "  %-28s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

build: ## build bin/mcpgateway (static, no cgo)
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/mcpgateway

# .env: .env.example with a new random JWT_SECRET_KEY (32 bytes, base64url),
# from bin/mcpgateway when it is built, else from /dev/urandom; readable by
# its owner only. An existing .env is kept.
.env:
	@if [ -x $(BIN) ]; then key=$$(./$(BIN) secret); \
	else key=$$(head -c32 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n'); fi; \
	if [ $${#key} -lt 43 ]; then echo "make .env: could not make a random JWT_SECRET_KEY" >&2; exit 1; fi; \
	grep -q '^JWT_SECRET_KEY=' .env.example || { echo "make .env: .env.example has no JWT_SECRET_KEY= line" >&2; exit 1; }; \
	( umask 077; sed "s|^JWT_SECRET_KEY=.*|JWT_SECRET_KEY=$$key|" .env.example > .env.tmp ) && mv .env.tmp .env && \
	echo "created .env from .env.example with a new random JWT_SECRET_KEY"

serve: build .env ## run the gateway (HTTP_SERVER=gunicorn profile) on 0.0.0.0:4444 with SQLite
	HTTP_SERVER=gunicorn ./$(BIN) serve

serve-granian: build .env ## run the gateway with the granian profile (backpressure 512 per worker)
	HTTP_SERVER=granian ./$(BIN) serve

serve-ssl: build .env certs ## run the gateway (gunicorn profile) over HTTPS on 0.0.0.0:4444 with certs/
	HTTP_SERVER=gunicorn $(TLS_ENV) ./$(BIN) serve

serve-granian-ssl: build .env certs ## run the granian profile over HTTPS with certs/
	HTTP_SERVER=granian $(TLS_ENV) ./$(BIN) serve

serve-granian-http2: build .env certs ## run the granian profile with HTTP/2 over TLS (GRANIAN_HTTP=2, certs/)
	HTTP_SERVER=granian GRANIAN_HTTP=$(GRANIAN_HTTP) $(TLS_ENV) ./$(BIN) serve

certs: build ## write a self-signed cert.pem + key.pem to certs/ (kept if both exist; rm -r certs to renew)
	@if [ -f $(CERT_DIR)/cert.pem ] && [ -f $(CERT_DIR)/key.pem ]; then \
	  echo "$(CERT_DIR)/cert.pem and $(CERT_DIR)/key.pem exist: kept (rm -r $(CERT_DIR) to make new ones)"; \
	else \
	  ./$(BIN) certs --dir $(CERT_DIR); \
	fi

test: services tools mcp-servers lint ## run every test: unit, process-level (real binary, signals), race, fuzz
	$(GO) test -count=1 ./...
	$(GO) test -count=1 -race $(RACE_PKGS)
	$(MAKE) --no-print-directory fuzz

test-unit: ## the tests without the race and fuzz passes
	$(GO) test ./...

fuzz: ## run each fuzz target for FUZZTIME (default 5s); a failure shows the fuzzer's output
	@GO=$(GO) FUZZTIME=$(FUZZTIME) bash .ci/fuzz.sh

lint: ## gofmt and go vet
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

smoke: build ## CI smoke test: serve on a free port, /health, /ready, convert_time, verified load, clean TERM stop
	$(GO) build -o bin/smoke ./tests/smoke
	./bin/smoke -bin $(BIN)

bench: build tools ## the benchmarks of docs/performance.md (tests/bench)
	$(GO) run ./tests/bench

services: ## make sure PostgreSQL and Redis run on 127.0.0.1 (install/start them if needed); install nginx (never started as a service)
	@bash .ci/services.sh

tools: ## install hey and wrk (load generators) with apt-get when missing
	@command -v hey >/dev/null && command -v wrk >/dev/null || { \
	  s=; [ "$$(id -u)" = 0 ] || s=sudo; $$s apt-get update -qq && $$s apt-get install -y -qq hey wrk >/dev/null; }

mcp-servers: ## install Node (apt-get) when missing, the upstream MCP servers of the federation tests and the MCP conformance suite with the Node 22 it needs (npm, tests/upstream)
	@command -v npm >/dev/null || { \
	  s=; [ "$$(id -u)" = 0 ] || s=sudo; $$s apt-get update -qq && $$s apt-get install -y -qq nodejs npm >/dev/null; }
	@[ -x tests/upstream/node_modules/.bin/mcp-server-everything ] && [ -x tests/upstream/node_modules/.bin/conformance ] && \
	  [ -x tests/upstream/node_modules/.bin/node ] && \
	  [ -e tests/upstream/node_modules/@modelcontextprotocol/sdk/package.json ] && \
	  [ -e tests/upstream/node_modules/@modelcontextprotocol/client/package.json ] || \
	  npm ci --prefix tests/upstream --no-audit --no-fund --loglevel=error

hey: build tools ## mint a token and run the guide's hey load (tests/hey.sh) against a running server
	@./$(BIN) token -u "$${PLATFORM_ADMIN_EMAIL:-admin@example.com}" -e 60 > jwt.txt
	bash tests/hey.sh

# $(call engine,ARGS[,ssl]) runs ARGS with podman or docker, whichever
# answers. With neither it prints the exact command and fails. "ssl" adds the
# user mapping that lets the container read ./certs/key.pem; podman builds in
# docker format, since the OCI format has no HEALTHCHECK.
define engine
	@eng="$(CONTAINER_ENGINE)"; \
	if [ -z "$$eng" ]; then \
	  for e in podman docker; do \
	    if command -v $$e >/dev/null 2>&1 && $$e info >/dev/null 2>&1; then eng=$$e; break; fi; \
	  done; \
	fi; \
	shown=$$eng; \
	if [ -z "$$shown" ]; then \
	  for e in podman docker; do if command -v $$e >/dev/null 2>&1; then shown=$$e; break; fi; done; \
	fi; \
	shown=$${shown:-docker}; extra=; \
	if [ "$(2)" = ssl ]; then \
	  if [ "$$shown" = podman ]; then extra=" --userns=keep-id"; else extra=" --user $$(id -u):$$(id -g)"; fi; \
	fi; \
	if [ "$(firstword $(1))" = build ] && [ "$$shown" = podman ]; then extra=" --format docker"; fi; \
	cmd="$$shown $(firstword $(1))$$extra $(wordlist 2,999,$(1))"; \
	if [ -z "$$eng" ]; then \
	  echo "make $@: no container engine: podman and docker are missing or their engine does not answer (podman info / docker info failed)." >&2; \
	  echo "make $@: the command would be:" >&2; \
	  echo "  $$cmd" >&2; \
	  exit 1; \
	fi; \
	echo "$$cmd"; $$cmd
endef

container-build: ## build the image mcpgateway/mcpgateway:latest (IMAGE=...) from Containerfile, podman or docker
	$(call engine,build -f Containerfile --build-arg VERSION=$(VERSION) -t $(IMAGE) .)

container-run: .env ## run the image on :4444 with .env (HTTP_SERVER=gunicorn, the image's default)
	$(call engine,$(CONTAINER_RUN) $(IMAGE))

container-run-gunicorn: .env ## run the image with -e HTTP_SERVER=gunicorn on :4444
	$(call engine,$(CONTAINER_RUN) -e HTTP_SERVER=gunicorn $(IMAGE))

container-run-granian: .env ## run the image with -e HTTP_SERVER=granian on :4444
	$(call engine,$(CONTAINER_RUN) -e HTTP_SERVER=granian $(IMAGE))

container-run-gunicorn-ssl: .env certs ## run the image over HTTPS (gunicorn profile), certs/ mounted read-only
	$(call engine,$(CONTAINER_RUN) -e HTTP_SERVER=gunicorn $(CONTAINER_CERTS) $(IMAGE),ssl)

container-run-granian-ssl: .env certs ## run the image over HTTPS (granian profile, HTTP/2 by ALPN), certs/ mounted read-only
	$(call engine,$(CONTAINER_RUN) -e HTTP_SERVER=granian $(CONTAINER_CERTS) $(IMAGE),ssl)

clean: ## remove build output and the local SQLite database
	rm -rf bin mcp.db mcp.db-shm mcp.db-wal jwt.txt
