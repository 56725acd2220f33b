# fieldhub — see README.md.
GO      ?= go
BIN     := bin/fieldhub
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X github.com/fieldhub/fieldhub/internal/cli.Version=$(VERSION)

.PHONY: all build run test test-deps ui vet fuzz bench clean mochi-patch

all: build

build: ui
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN) ./cmd/fieldhub

# The demo: a hub on loopback with simulated devices; prints the URL and token.
run: build
	./$(BIN) demo

# Every test, on a fresh Debian machine with Go: installs what it needs,
# starts its own servers on free loopback ports and stops them again.
test: test-deps
	$(MAKE) ui
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { echo "gofmt needed:"; gofmt -l $$(git ls-files '*.go'); exit 1; }
	$(GO) vet ./...
	# Parking is Linux-only; elsewhere the packages must still build.
	GOOS=darwin $(GO) build ./... && GOOS=windows $(GO) build ./...
	$(GO) test -race -timeout 20m ./...
	# The hub's end-to-end tests again with every store in PostgreSQL
	# (a server of its own on a free loopback port, stopped at the end).
	FIELDHUB_TEST_STORAGE=postgres $(GO) test -race -count=1 -timeout 10m ./internal/hub
	# Our copy of mochi-mqtt (third_party/README.md) with its own tests; one
	# upstream test is flaky under -race in the unpatched release as well.
	cd $(MOCHI) && $(GO) test -race -count=1 -skip TestEstablishConnectionInheritExistingTrueTakeover . ./packets ./listeners
	# The reconnect storm (2,000 TLS devices) runs without the race
	# detector, which would make its 4,000 handshakes take minutes.
	$(GO) test -count=1 -timeout 10m -run 'TestReconnectStorm' -v ./device

test-deps:
	./scripts/test-deps.sh

# The dashboard's charting library (uPlot), installed with npm from the
# lockfile in internal/web, checked against the SHA-256 sums recorded in
# internal/web/uplot.sha256 and copied into the folder the binary embeds
# (not committed; go build without it serves a dashboard without charts).
UI      := internal/web
UI_DIST := $(UI)/static/vendor
ui: $(UI_DIST)/uPlot.iife.min.js

$(UI_DIST)/uPlot.iife.min.js: $(UI)/package.json $(UI)/package-lock.json $(UI)/uplot.sha256
	./scripts/npm-deps.sh
	cd $(UI) && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error
	cd $(UI)/node_modules/uplot && sha256sum --check --strict --quiet ../../uplot.sha256
	cp $(UI)/node_modules/uplot/dist/uPlot.min.css $(UI_DIST)/uPlot.min.css
	cp $(UI)/node_modules/uplot/LICENSE $(UI_DIST)/uPlot.LICENSE
	cp $(UI)/node_modules/uplot/dist/uPlot.iife.min.js $@

# Longer fuzzing runs of the parsers (the seed corpora run in `make test`).
FUZZTIME ?= 60s
fuzz:
	$(GO) test -run '^$$' -fuzz FuzzDecodeTelemetry -fuzztime $(FUZZTIME) ./payload
	$(GO) test -run '^$$' -fuzz FuzzParse -fuzztime $(FUZZTIME) ./topic
	$(GO) test -run '^$$' -fuzz FuzzAppendPoint -fuzztime $(FUZZTIME) ./internal/influx
	$(GO) test -run '^$$' -fuzz FuzzHandler -fuzztime $(FUZZTIME) ./internal/brokerauth
	$(GO) test -run '^$$' -fuzz FuzzDecode -fuzztime $(FUZZTIME) ./internal/telquery

bench: build
	$(GO) test -run '^$$' -bench . -benchtime 2s ./payload ./internal/tsdb
	./$(BIN) bench ingest

# The diff of our copy of mochi-mqtt against its release.
MOCHI     := third_party/mochi-mqtt-server
MOCHI_VER := v2.7.9
mochi-patch:
	$(GO) mod download github.com/mochi-mqtt/server/v2@$(MOCHI_VER)
	tmp=$$(mktemp -d) && \
	ln -s "$$($(GO) env GOMODCACHE)/github.com/mochi-mqtt/server/v2@$(MOCHI_VER)" $$tmp/upstream && \
	ln -s "$(CURDIR)/$(MOCHI)" $$tmp/ours && \
	{ cd $$tmp && diff -ruN -x cmd -x examples -x Dockerfile -x 'README-*.md' -x config.yaml -x go.sum \
		upstream/ ours/ > "$(CURDIR)/$(MOCHI).patch"; test $$? = 1; }; \
	rc=$$?; rm -rf $$tmp; exit $$rc

clean:
	rm -rf bin $(UI)/node_modules $(UI_DIST)/uPlot.iife.min.js $(UI_DIST)/uPlot.min.css $(UI_DIST)/uPlot.LICENSE
