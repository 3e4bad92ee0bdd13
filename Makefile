# edge — run `make help` for the targets.
GO        ?= go
STATICCHECK = $(GO) run honnef.co/go/tools/cmd/staticcheck@v0.8.2
VERSION   ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS   := -X main.version=$(VERSION)
FUZZTIME  ?= 30s
# Development defaults for the secrets edge.hcl reads; set your own in production.
EDGE_ADMIN_TOKEN    ?= dev-admin-token
EDGE_SECKILL_SECRET ?= dev-seckill-secret-0123456789abcdef
ORIGINS   := 127.0.0.1:9001,127.0.0.1:9002,127.0.0.1:9101,127.0.0.1:9102,127.0.0.1:9103

.PHONY: help build run devcert check test lint fuzz bench soak abuse plan clean

help: ## show the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

build: ## build bin/edge and bin/sample-origin
	$(GO) build -ldflags "$(LDFLAGS)" -o bin/edge ./cmd/edge
	$(GO) build -o bin/sample-origin ./cmd/sample-origin

run: build devcert ## start the sample origins and edge with ./edge.hcl (Ctrl-C stops both)
	@./bin/sample-origin -listen $(ORIGINS) & origin=$$!; \
	trap 'kill $$origin 2>/dev/null' EXIT INT TERM; \
	EDGE_ADMIN_TOKEN=$(EDGE_ADMIN_TOKEN) EDGE_SECKILL_SECRET=$(EDGE_SECKILL_SECRET) ./bin/edge -config edge.hcl

DEVCERT := state/dev-cert.pem
devcert: ## (re)create the self-signed localhost certificate edge.hcl's https listener serves, when missing or expiring
	@mkdir -p state
	@if ! openssl x509 -checkend 86400 -noout -in $(DEVCERT) >/dev/null 2>&1; then \
	  echo "creating a self-signed certificate for localhost in $(DEVCERT)"; \
	  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 30 \
	    -subj /CN=localhost -addext "subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1" \
	    -keyout state/dev-key.pem -out $(DEVCERT) 2>/dev/null && chmod 600 state/dev-key.pem; \
	fi

check: build devcert ## validate ./edge.hcl the way startup and reload do
	EDGE_ADMIN_TOKEN=$(EDGE_ADMIN_TOKEN) EDGE_SECKILL_SECRET=$(EDGE_SECKILL_SECRET) ./bin/edge -check -config edge.hcl

test: ## vet, every test, then every test again under the race detector (installs redis-server, chromium and prometheus when missing and root)
	@scripts/ensure-deps chromium prometheus
	$(GO) vet ./...
	$(GO) test -count=1 -timeout 12m ./...
	$(GO) test -race -count=1 -timeout 15m ./...

lint: ## gofmt, go vet and staticcheck must all be clean
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(STATICCHECK) ./...

FUZZPARALLEL ?= 1
fuzz: ## run every fuzz target (func Fuzz* in any _test.go) for FUZZTIME (default 30s) each, FUZZPARALLEL workers (default 1)
	@set -e; for file in $$(grep -rl --include='*_test.go' '^func Fuzz' . | sort); do \
	  pkg=$$(dirname $$file); \
	  for target in $$(sed -n 's/^func \(Fuzz[A-Za-z0-9_]*\)(.*/\1/p' $$file); do \
	    echo "== $$pkg $$target"; \
	    GO=$(GO) scripts/fuzz-one $$pkg $$target $(FUZZTIME) $(FUZZPARALLEL); \
	  done; \
	done

bench: ## edge vs nginx side by side; writes bench/results/<date>.md and .json
	@scripts/ensure-deps nginx nginx-stream wrk h2load strace
	$(GO) run ./bench run

SOAK ?= 10m
soak: ## mixed sale workload against a real edge for SOAK (default 10m): samples RSS, goroutines, fds and latency into bench/results/soak-<date>.md and .json
	@scripts/ensure-deps
	$(GO) test -count=1 -timeout 24h -run '^TestSoak$$' -v ./soak -soak.d=$(SOAK) -soak.out=$(CURDIR)/bench/results

abuse: ## full-size abuse cases (50,000 idle connections and 10,000 slow readers, as many as the descriptor limit and tcp_mem allow; 16 KB heads, 1M limiter and cache keys) against a real edge; writes bench/results/abuse-<date>.md
	@scripts/ensure-deps
	$(GO) test -count=1 -timeout 30m -run '^TestAbuse$$' -v ./soak -abuse.full -abuse.out=$(CURDIR)/bench/results

PLAN_ARGS ?= -users 100000000 -clicks 30 -factor 4 -peak-hours 5
plan: ## capacity planner; override with PLAN_ARGS="-users N -clicks C -factor F -peak-hours H [-layer app=2000]"
	$(GO) run ./bench plan $(PLAN_ARGS)

clean: ## remove build output
	rm -rf bin
