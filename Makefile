# ChatFlow build.
#
#   make            build everything into build/
#   make run        install what is missing, start the local stack and both services (Ctrl-C stops all)
#   make cluster    the same with 3 consumers on the Redis bus and 2 producers, on printed free ports
#   make test       install what is missing, build, run every test; ends with "N passed, N failed"
#   make soak       the 30-minute soak test (MINUTES=N), not part of make test
#   make deps       install Debian packages (apt-get, as root) and the npm tools (project-local)
#   make images     both service images (docker build, or buildah on a debootstrapped base)
#   make SAN=address,undefined   instrumented build into build/san-address-undefined/
#   make SAN=thread              instrumented build into build/san-thread/
#   make BUILD=dir  build somewhere else (lets several builds share one tree)
#   make bench      every benchmark (e2e with MESSAGES=500000), results into docs/benchmarks.md
#   make bench-producer / make bench-consumer   one service's benchmarks, printed only
#
# Sources are discovered by folder, so adding a file to a service needs no edit here:
#   common/*.c          -> $(BUILD)/libchatflow.a
#   producer/*.c        -> $(BUILD)/chatflow-producer   (all but main.c also -> libproducer.a, for tests)
#   consumer/*.c        -> $(BUILD)/chatflow-consumer   (all but main.c also -> libconsumer.a, for tests)
#   common/tools/X.c    -> $(BUILD)/chatflow-X
#   test/unit/test_*.c  -> $(BUILD)/test/test_*        (no servers)
#   test/integration/it_*.c -> $(BUILD)/test/it_*      (run against the test stack)
#   test/lib/*.c        -> $(BUILD)/libtestsupport.a (the WebSocket test client, shared with the load generator)
#   test/loadgen/*.c    -> $(BUILD)/chatflow-loadgen
#   test/bench/bench_*.c -> $(BUILD)/bench/bench_*      (benchmark drivers, not tests)

CC      ?= cc
SAN     ?=
ifeq ($(SAN),)
BUILD   ?= build
SANFLAGS :=
else
BUILD   ?= build/san-$(subst $(comma),-,$(SAN))
SANFLAGS := -fsanitize=$(SAN) -fno-omit-frame-pointer -fno-sanitize-recover=all
endif
comma := ,

# pkg-config runs when make reads this file: the targets that install first (test, run, ...)
# therefore build through a second make (BUILD_AFTER_DEPS), which reads it after the install.
PKGS    := libwebsockets libcurl openssl libpq jansson libmicrohttpd cjose hiredis
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   := $(shell pkg-config --libs $(PKGS) 2>/dev/null)
PKGS_MISSING := $(shell pkg-config --exists $(PKGS) 2>/dev/null || echo yes)
BUILD_AFTER_DEPS = @$(MAKE) --no-print-directory all

CFLAGS  ?= -O2 -g
CFLAGS  += -std=c17 -D_GNU_SOURCE -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes \
           -Wno-missing-field-initializers -pthread -Icommon -Itest/lib -MMD -MP $(PKG_CFLAGS) $(SANFLAGS)
LDFLAGS += -pthread $(SANFLAGS)
LDLIBS  += $(PKG_LIBS) -lm

COMMON_SRC   := $(wildcard common/*.c)
PRODUCER_SRC := $(filter-out producer/main.c,$(wildcard producer/*.c))
CONSUMER_SRC := $(filter-out consumer/main.c,$(wildcard consumer/*.c))
TOOL_SRC     := $(wildcard common/tools/*.c)
TESTLIB_SRC  := $(wildcard test/lib/*.c)
LOADGEN_SRC  := $(wildcard test/loadgen/*.c)
UNIT_SRC     := $(wildcard test/unit/test_*.c)
IT_SRC       := $(wildcard test/integration/it_*.c)
BENCH_SRC    := $(wildcard test/bench/bench_*.c)

obj = $(patsubst %.c,$(BUILD)/obj/%.o,$(1))

LIBCOMMON   := $(BUILD)/libchatflow.a
LIBPRODUCER := $(BUILD)/libproducer.a
LIBCONSUMER := $(BUILD)/libconsumer.a
LIBTEST     := $(BUILD)/libtestsupport.a
PRODUCER    := $(if $(wildcard producer/main.c),$(BUILD)/chatflow-producer)
CONSUMER    := $(if $(wildcard consumer/main.c),$(BUILD)/chatflow-consumer)
LOADGEN     := $(if $(LOADGEN_SRC),$(BUILD)/chatflow-loadgen)
TOOLS       := $(patsubst common/tools/%.c,$(BUILD)/chatflow-%,$(TOOL_SRC))
UNIT_TESTS  := $(patsubst test/unit/%.c,$(BUILD)/test/%,$(UNIT_SRC))
IT_TESTS    := $(patsubst test/integration/%.c,$(BUILD)/test/%,$(IT_SRC))
BENCHES     := $(patsubst test/bench/%.c,$(BUILD)/bench/%,$(BENCH_SRC))

ALL_BINS := $(PRODUCER) $(CONSUMER) $(TOOLS) $(LOADGEN) $(UNIT_TESTS) $(IT_TESTS) $(BENCHES)

# The build's identity for chatflow_build_info, compiled into one object only (a new commit does
# not rebuild the rest); the stamp changes, and that object is rebuilt, when the revision does.
CHATFLOW_REVISION := $(shell git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
CHATFLOW_VERSION := $(shell git describe --tags --always --dirty 2>/dev/null || echo unknown)
BUILD_ID_STAMP := $(BUILD)/build-id
$(shell mkdir -p $(BUILD) && echo '$(CHATFLOW_VERSION) $(CHATFLOW_REVISION)' | cmp -s - $(BUILD_ID_STAMP) || echo '$(CHATFLOW_VERSION) $(CHATFLOW_REVISION)' > $(BUILD_ID_STAMP))
$(BUILD)/obj/common/process_metrics.o: CFLAGS += -DCHATFLOW_VERSION='"$(CHATFLOW_VERSION)"' -DCHATFLOW_REVISION='"$(CHATFLOW_REVISION)"'
$(BUILD)/obj/common/process_metrics.o: $(BUILD_ID_STAMP)

# Plain `make` builds everything (check-pkgs comes first in the file but is not the goal).
.DEFAULT_GOAL := all

# Without the -dev packages every link fails with hundreds of undefined references: say why once.
check-pkgs:
ifneq ($(PKGS_MISSING),)
	@echo "build: pkg-config does not find all of: $(PKGS) (run: make deps)" >&2; exit 1
endif

.PHONY: all check-pkgs deps images run cluster test test-unit sanitizer-builds fuzz stack-up stack-down bench bench-producer bench-consumer demo clean
all: $(ALL_BINS)

# Objects are kept between builds (pattern-rule intermediates would otherwise be deleted).
# .PRECIOUS on the objects alone, not a bare .SECONDARY: that would make the empty rules -MP
# writes for headers secondary too, and a header moved or deleted would then not rebuild the
# objects that included it.
.PRECIOUS: $(BUILD)/obj/%.o

$(BUILD)/obj/%.o: %.c | check-pkgs
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@

$(LIBCOMMON): $(call obj,$(COMMON_SRC))
$(LIBPRODUCER): $(call obj,$(PRODUCER_SRC))
$(LIBCONSUMER): $(call obj,$(CONSUMER_SRC))
$(LIBTEST): $(call obj,$(TESTLIB_SRC))
$(BUILD)/%.a:
	@mkdir -p $(dir $@)
	rm -f $@ && ar rcs $@ $^

$(BUILD)/chatflow-producer: $(call obj,producer/main.c) $(LIBPRODUCER) $(LIBCOMMON)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)
$(BUILD)/chatflow-consumer: $(call obj,consumer/main.c) $(LIBCONSUMER) $(LIBCOMMON)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)
$(BUILD)/chatflow-loadgen: $(call obj,$(LOADGEN_SRC)) $(LIBTEST) $(LIBCOMMON)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)
$(BUILD)/chatflow-%: $(BUILD)/obj/common/tools/%.o $(LIBCOMMON)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)
$(BUILD)/test/test_%: $(BUILD)/obj/test/unit/test_%.o $(LIBPRODUCER) $(LIBCONSUMER) $(LIBTEST) $(LIBCOMMON)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)
$(BUILD)/bench/bench_%: $(BUILD)/obj/test/bench/bench_%.o $(LIBPRODUCER) $(LIBCONSUMER) $(LIBTEST) $(LIBCOMMON)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)
$(BUILD)/test/it_%: $(BUILD)/obj/test/integration/it_%.o $(LIBPRODUCER) $(LIBCONSUMER) $(LIBTEST) $(LIBCOMMON)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

# Installing is the project's job: fast when everything is there already.
deps:
	@deploy/local/deps

# Both service images: docker build with an engine, else buildah on a debootstrapped base
# (deploy/images; docs/deployment.md). test/integration/images.sh runs them with podman.
images: deps
	@deploy/images build

# Unit tests need no servers; the full run adds the integration tests, which start
# their own PostgreSQL and fauxqs on free loopback ports and stop them by PID. Then, from the
# instrumented builds (test/run --sanitizers, docs/reliability.md): the unit tests and the
# integration tests again against the AddressSanitizer + UndefinedBehaviorSanitizer services, the
# threaded unit tests and the core producer/consumer integration tests against the ThreadSanitizer
# services, and one producer and one consumer integration test with the services under Valgrind
# memcheck. A report in any process, children included, fails the run.
ASAN_BUILD := build/san-address-undefined
TSAN_BUILD := build/san-thread
test: deps
	$(BUILD_AFTER_DEPS)
	@$(MAKE) --no-print-directory sanitizer-builds
	@BUILD=$(BUILD) ASAN_BUILD=$(ASAN_BUILD) TSAN_BUILD=$(TSAN_BUILD) test/run --sanitizers

sanitizer-builds:
	@$(MAKE) --no-print-directory -s SAN=address,undefined BUILD=$(ASAN_BUILD) all
	@$(MAKE) --no-print-directory -s SAN=thread BUILD=$(TSAN_BUILD) all

# The soak test (not part of make test): MINUTES (30) at 80 % of the measured maximum end-to-end
# rate on a private stack; timeline, RSS and the exactly-once check in $(BUILD)/soak/<date>/.
MINUTES ?= 30
.PHONY: soak
soak: deps
	$(BUILD_AFTER_DEPS)
	@BUILD=$(BUILD) test/soak/run --minutes $(MINUTES)

test-unit: all
	@BUILD=$(BUILD) test/run --unit-only

run: deps
	$(BUILD_AFTER_DEPS)
	@BUILD=$(BUILD) deploy/local/run

# Several consumers sharing every room through Redis (the stack's), producers' pages on different
# consumers; deploy/local/cluster prints every process's ports.
cluster: deps
	$(BUILD_AFTER_DEPS)
	@BUILD=$(BUILD) deploy/local/cluster

# The whole system under the reference load (MESSAGES=500000 by default), verified end to end.
MESSAGES ?= 500000
demo: deps
	$(BUILD_AFTER_DEPS)
	@BUILD=$(BUILD) MESSAGES=$(MESSAGES) deploy/local/demo

# Benchmarks (test/bench/): each on a private stack, next to its baseline measured in the same
# run; they assert nothing about speed. `make bench` also rewrites the tables in docs/benchmarks.md.
bench: deps
	$(BUILD_AFTER_DEPS)
	@BUILD=$(BUILD) test/bench/run --messages $(MESSAGES)
bench-producer: deps
	$(BUILD_AFTER_DEPS)
	@BUILD=$(BUILD) test/bench/producer.sh
bench-consumer: deps
	$(BUILD_AFTER_DEPS)
	@BUILD=$(BUILD) test/bench/consumer.sh && BUILD=$(BUILD) test/bench/broadcast.sh

stack-up: deps
	$(BUILD_AFTER_DEPS)
	@BUILD=$(BUILD) deploy/local/stack up
stack-down:
	@BUILD=$(BUILD) deploy/local/stack down

# libFuzzer targets (clang): each runs FUZZ_SECONDS over its committed seed corpus.
FUZZ_SECONDS ?= 60
fuzz:
	@test/fuzz/run --seconds $(FUZZ_SECONDS)

clean:
	rm -rf build

-include $(shell find $(BUILD)/obj -name '*.d' 2>/dev/null)
