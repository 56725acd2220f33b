# fieldhub — see README.md.
GO      ?= go
BIN     := bin/fieldhub
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X github.com/fieldhub/fieldhub/internal/cli.Version=$(VERSION)

.PHONY: all build run test test-deps vet fuzz bench clean

all: build

build:
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN) ./cmd/fieldhub

# The demo: a hub on loopback with simulated devices; prints the URL and token.
run: build
	./$(BIN) demo

# Every test, on a fresh Debian machine with Go: installs what it needs,
# starts its own servers on free loopback ports and stops them again.
test: test-deps
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { echo "gofmt needed:"; gofmt -l $$(git ls-files '*.go'); exit 1; }
	$(GO) vet ./...
	$(GO) test -race -timeout 20m ./...
	# The reconnect storm (2,000 TLS devices) runs without the race
	# detector, which would make its 4,000 handshakes take minutes.
	$(GO) test -count=1 -timeout 10m -run 'TestReconnectStorm' -v ./device

test-deps:
	./scripts/test-deps.sh

# Longer fuzzing runs of the parsers (the seed corpora run in `make test`).
FUZZTIME ?= 60s
fuzz:
	$(GO) test -run '^$$' -fuzz FuzzDecodeTelemetry -fuzztime $(FUZZTIME) ./payload
	$(GO) test -run '^$$' -fuzz FuzzParse -fuzztime $(FUZZTIME) ./topic

bench: build
	$(GO) test -run '^$$' -bench . -benchtime 2s ./payload ./internal/tsdb
	./$(BIN) bench ingest

clean:
	rm -rf bin
