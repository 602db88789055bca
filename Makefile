# Thin wrapper over CMake + Ninja. Two build trees:
#   build/        release-ish (RelWithDebInfo) for `make`, `make run`, `make bench`
#   build/check/  clang, -Werror, ASan + UBSan, fuzzers: for `make check`, `make fuzz`
.PHONY: all deps build run check fuzz bench clean

CHECK_DIR := build/check
FUZZ_SECONDS ?= 60

all: build

deps:
	@scripts/deps.sh

build: deps
	@cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
	@cmake --build build

run: build
	@scripts/run.sh

check: deps
	@CC=clang cmake -S . -B $(CHECK_DIR) -G Ninja -DCMAKE_BUILD_TYPE=Debug \
	    -DKEEL_SANITIZE=ON -DKEEL_WERROR=ON -DKEEL_FUZZ=ON >/dev/null
	@cmake --build $(CHECK_DIR)
	@cd $(CHECK_DIR) && ctest --output-on-failure --timeout 300 -j2

fuzz: check
	@scripts/fuzz.sh $(CHECK_DIR)/bin $(FUZZ_SECONDS)

bench: build
	@build/bin/bench-audit && build/bin/bench-fanout && bench/agent_rss.sh build/bin && build/bin/bench-policy \
	    && bench/agent_metrics.sh build/bin && build/bin/bench-tsdb && build/bin/bench-alerts \
	    && build/bin/bench-reaction

clean:
	rm -rf build
