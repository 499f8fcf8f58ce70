# Pensieve - one Makefile.
#
#   make            build build/pensieve (CPU backend)
#   make run        install what serving needs, build, serve the default chat model
#   make test       set up, build, run every test (C unit tests under ASan/UBSan + pytest)
#   make bench      speed against llama.cpp on the same machine (ratios, medians)
#   make bench-serve    serving with 1/2/4/8 concurrent streams beside llama.cpp's own
#                   server (built once into build/llama.cpp from the pinned sdist)
#   make cuda       build build/cuda/pensieve with the CUDA backend (needs nvcc)
#   make check-engine   engine-only build (no server/chat/CLI libraries) + its unit tests
#                   under ASan/UBSan + mode_check on CHECK_MODELS (a folder of .gguf files)
#   make models-large   install Qwen2.5-Coder-1.5B-Instruct Q4_K_M (`pensieve pull`)
#   make fuzz       build the libFuzzer harnesses (clang) and run each for FUZZ_SECONDS
#   make soak       the load and soak test (SOAK_MINUTES, default 30; not part of make test)
#   make clean
#
# Settings you may change on the command line: CC, OPT, NVCC, CUDA_ARCH, PORT, MODEL, ARGS,
# FUZZ_CC, FUZZ_SECONDS, SOAK_MINUTES.

CC        ?= cc
OPT       ?= -O2
NVCC      ?= nvcc
CUDA_ARCH ?= sm_90
PORT      ?= 8080
MODEL     ?=
ARGS      ?=
FUZZ_CC   ?= clang
FUZZ_SECONDS ?= 60
SOAK_MINUTES ?= 30

PKGS      := libmicrohttpd jansson libpcre2-8 libutf8proc libcurl zlib
PKG_CFLAGS = $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   = $(shell pkg-config --libs $(PKGS) 2>/dev/null)

WARN      := -Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes -Wno-unused-parameter -Wno-missing-field-initializers
CFLAGS_COMMON = -std=c11 -g $(WARN) -D_GNU_SOURCE -fvisibility=hidden -fno-common \
                -Iinclude -Isrc $(PKG_CFLAGS)
SIMD_FLAGS := -mavx2 -mfma -mf16c
AVX512_FLAGS := -mavx512f -mavx512bw -mavx512vl -mavx512dq -mavx512vnni
# per file: *_avx2.c get SIMD_FLAGS, *_vnni.c SIMD_FLAGS and AVX-VNNI, *_avx512.c SIMD_FLAGS
# and AVX-512 (F, BW, VL, DQ, VNNI); dispatch.c runs each only on a CPU that has them
simd_flags = $(if $(findstring _avx2,$(1)),$(SIMD_FLAGS))$(if $(findstring _vnni,$(1)),$(SIMD_FLAGS) -mavxvnni)$(if $(findstring _avx512,$(1)),$(SIMD_FLAGS) $(AVX512_FLAGS))
LIBS       = $(PKG_LIBS) -lm -lpthread
SAN        := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined

# Sources: every .c of a module folder; the CPU build uses the no-CUDA stub.
LIB_SRC    := $(filter-out src/cli/% src/compute/cuda/%,$(wildcard src/*/*.c src/*/*/*.c))
CPU_SRC    := $(filter-out %_cuda.c,$(LIB_SRC))
CUDA_CSRC  := $(filter-out %_nocuda.c,$(LIB_SRC)) $(wildcard src/compute/cuda/*.c)
CUDA_CUSRC := $(wildcard src/compute/cuda/*.cu)
CLI_SRC    := $(wildcard src/cli/*.c)
UNIT_SRC   := $(wildcard tests/unit/test_*.c)
TOOL_SRC   := $(wildcard tests/tools/*.c)

B          := build
OBJ        := $(patsubst src/%.c,$(B)/obj/%.o,$(CPU_SRC))
CLI_OBJ    := $(patsubst src/%.c,$(B)/obj/%.o,$(CLI_SRC))
ASAN_OBJ   := $(patsubst src/%.c,$(B)/asan/%.o,$(CPU_SRC))
UNIT_BIN   := $(patsubst tests/unit/%.c,$(B)/unit/%,$(UNIT_SRC))
TOOL_BIN   := $(patsubst tests/tools/%.c,$(B)/tools/%,$(TOOL_SRC))
FUZZ_SRC   := $(wildcard tests/fuzz/fuzz_*.c)
FUZZ_BIN   := $(patsubst tests/fuzz/%.c,$(B)/fuzz/%,$(FUZZ_SRC))
# the harnesses reach the parsers, not the engine or the server (whose CPU-feature
# built-ins clang 14 does not all know)
FUZZ_OBJ   := $(patsubst src/%.c,$(B)/fuzz/obj/%.o,$(filter-out src/engine/% src/server/% src/compute/cpu/%,$(CPU_SRC)))
FUZZ_SAN   := -fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer
CUDA_OBJ   := $(patsubst src/%.c,$(B)/cuda/%.o,$(CUDA_CSRC) $(CLI_SRC)) \
              $(patsubst src/%.cu,$(B)/cuda/%.cu.o,$(CUDA_CUSRC))

.PHONY: all run test unit e2e bench bench-serve cuda models-large setup clean check-engine fuzz fuzz-build soak

all: $(B)/pensieve $(TOOL_BIN)

$(B)/pensieve: $(OBJ) $(CLI_OBJ)
	$(CC) -o $@ $^ $(LIBS)

$(B)/libpensieve.a: $(OBJ)
	@rm -f $@
	ar rcs $@ $^

# Test tools: small programs over the library that differential tests drive.
$(B)/tools/%: tests/tools/%.c $(B)/libpensieve.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_COMMON) $(OPT) -o $@ $< $(B)/libpensieve.a $(LIBS)

$(B)/obj/%.o: src/%.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_COMMON) $(OPT) -MMD -MP $(call simd_flags,$@) -c $< -o $@

$(B)/asan/%.o: src/%.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_COMMON) -O1 $(SAN) -MMD -MP $(call simd_flags,$@) -c $< -o $@

$(B)/asan/libpensieve.a: $(ASAN_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(B)/unit/%: tests/unit/%.c tests/unit/harness.h $(B)/asan/libpensieve.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_COMMON) -O1 $(SAN) -Itests/unit -o $@ $< $(B)/asan/libpensieve.a $(LIBS)

# libFuzzer harnesses: the library rebuilt by clang with coverage, ASan and UBSan.
$(B)/fuzz/obj/%.o: src/%.c
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(CFLAGS_COMMON) -O1 $(FUZZ_SAN) -fsanitize=fuzzer-no-link -MMD -MP $(call simd_flags,$@) -c $< -o $@

$(B)/fuzz/libpensieve.a: $(FUZZ_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(B)/fuzz/%: tests/fuzz/%.c tests/fuzz/fuzz.h tests/fuzz/fuzz_tokenize.h $(B)/fuzz/libpensieve.a
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(CFLAGS_COMMON) -O1 $(FUZZ_SAN) -fsanitize=fuzzer -Itests/fuzz -o $@ $< $(B)/fuzz/libpensieve.a $(LIBS)

fuzz-build:
	@command -v $(FUZZ_CC) >/dev/null || { echo "make fuzz: $(FUZZ_CC) not found (apt-get install clang)" >&2; exit 1; }
	@$(MAKE) --no-print-directory $(FUZZ_BIN)

fuzz: fuzz-build
	@scripts/run-fuzz $(FUZZ_SECONDS) $(FUZZ_BIN)

soak: all
	@.venv/bin/python tests/soak/soak.py --binary $(B)/pensieve --minutes $(SOAK_MINUTES) $(ARGS)

setup:
	@scripts/setup

# run installs only what serving needs (no test tools) and builds quietly.
run:
	@scripts/setup --serve
	@scripts/run-default $(B)/pensieve $(PORT) "$(MODEL)" $(ARGS)

unit: $(UNIT_BIN)
	@scripts/run-unit $(UNIT_BIN)

e2e: all
	@.venv/bin/python -m pytest tests -q -ra --durations=15

test: setup
	@$(MAKE) --no-print-directory all
	@$(MAKE) --no-print-directory unit
	@$(MAKE) --no-print-directory e2e

bench: setup all
	@.venv/bin/python bench/compare.py --binary $(B)/pensieve $(ARGS)

bench-serve: all
	@.venv/bin/python bench/serve_bench.py --binary $(B)/pensieve \
		--llama-server "$$(bench/llama_server.sh | tail -n 1)" $(ARGS)

models-large: setup
	@scripts/setup --large-model

# Engine-only build: util, compute, model, tok and engine with none of the server's, chat's
# or CLI's libraries, for a machine that has a C compiler and PCRE2 (tok/ needs it) but
# no -dev packages: PCRE2_CFLAGS / PCRE2_LIBS may point at a copied header and library.
# Runs the unit tests of those modules under ASan/UBSan, then mode_check (every kernel
# mode the CPU runs against the scalar reference) on each CHECK_MODELS/*.gguf.
# (model/pull.c, the downloader, needs libcurl and zlib: not part of it)
ENGINE_SRC   := $(filter-out src/model/pull.c,$(filter src/util/% src/compute/% src/model/% src/tok/% src/engine/%,$(CPU_SRC)))
ENGINE_UNITS := $(addprefix $(B)/engine/unit/,test_util test_compute test_engine test_gguf test_model test_mlx)
PCRE2_CFLAGS ?= $(shell pkg-config --cflags libpcre2-8 2>/dev/null)
PCRE2_LIBS   ?= -lpcre2-8
CHECK_MODELS ?=
ENGINE_CFLAGS = -std=c11 -g $(WARN) -D_GNU_SOURCE -fvisibility=hidden -fno-common -Iinclude -Isrc $(PCRE2_CFLAGS)

$(B)/engine/asan/%.o: src/%.c
	@mkdir -p $(dir $@)
	$(CC) $(ENGINE_CFLAGS) -O1 $(SAN) $(call simd_flags,$@) -c $< -o $@

$(B)/engine/obj/%.o: src/%.c
	@mkdir -p $(dir $@)
	$(CC) $(ENGINE_CFLAGS) $(OPT) $(call simd_flags,$@) -c $< -o $@

$(B)/engine/libasan.a: $(patsubst src/%.c,$(B)/engine/asan/%.o,$(ENGINE_SRC))
	@rm -f $@
	ar rcs $@ $^

$(B)/engine/lib.a: $(patsubst src/%.c,$(B)/engine/obj/%.o,$(ENGINE_SRC))
	@rm -f $@
	ar rcs $@ $^

$(B)/engine/unit/%: tests/unit/%.c tests/unit/harness.h $(B)/engine/libasan.a
	@mkdir -p $(dir $@)
	$(CC) $(ENGINE_CFLAGS) -O1 $(SAN) -Itests/unit -o $@ $< $(B)/engine/libasan.a $(PCRE2_LIBS) -lm -lpthread

$(B)/engine/mode_check: tests/tools/mode_check.c $(B)/engine/lib.a
	$(CC) $(ENGINE_CFLAGS) $(OPT) -o $@ $< $(B)/engine/lib.a $(PCRE2_LIBS) -lm -lpthread

check-engine: $(ENGINE_UNITS) $(B)/engine/mode_check
	@scripts/run-unit $(ENGINE_UNITS)
	@set -e; for m in $(wildcard $(CHECK_MODELS)/*.gguf); do $(B)/engine/mode_check $$m; done

# CUDA build: same sources with the CUDA backend instead of the no-CUDA stub.
cuda:
	@command -v $(NVCC) >/dev/null || { echo "make cuda: $(NVCC) not found; the CUDA backend needs the CUDA toolkit" >&2; exit 1; }
	@[ -n "$(CUDA_CUSRC)" ] || { echo "make cuda: the CUDA backend (src/compute/cuda/*.cu) has not landed yet" >&2; exit 1; }
	@$(MAKE) --no-print-directory $(B)/cuda/pensieve $(B)/cuda/cuda_check $(B)/cuda/cuda_dequant_check $(B)/cuda/cuda_emu_check

$(B)/cuda/pensieve: $(CUDA_OBJ)
	$(NVCC) -arch=$(CUDA_ARCH) -o $@ $^ $(LIBS) -ldl

# the library objects of the CUDA build (no CLI), for the check tools
CUDA_LIB_OBJ := $(filter-out $(B)/cuda/cli/%,$(CUDA_OBJ))

# the CUDA dequantization as host code against the CPU's (runs without a GPU)
$(B)/cuda/cuda_dequant_check: tests/tools/cuda_dequant_check.cu $(wildcard src/compute/cuda/*.cuh) $(CUDA_LIB_OBJ)
	$(NVCC) -O2 -arch=$(CUDA_ARCH) -std=c++17 -Iinclude -Isrc -o $@ $< $(CUDA_LIB_OBJ) $(LIBS) -ldl

# the kernels on CPU threads (a .cpp: nvcc hands it to the host compiler with CUDA's headers)
$(B)/cuda/cuda_emu_check: tests/tools/cuda_emu_check.cpp $(wildcard src/compute/cuda/*.cuh) $(CUDA_LIB_OBJ)
	$(NVCC) -O1 -std=c++20 -Xcompiler -pthread -Iinclude -Isrc -o $@ $< $(CUDA_LIB_OBJ) $(LIBS) -ldl

# the GPU check (tests/tools/cuda_check.c)
$(B)/cuda/cuda_check: tests/tools/cuda_check.c $(CUDA_LIB_OBJ)
	$(CC) $(CFLAGS_COMMON) $(OPT) -c $< -o $(B)/cuda/cuda_check.o
	$(NVCC) -arch=$(CUDA_ARCH) -o $@ $(B)/cuda/cuda_check.o $(CUDA_LIB_OBJ) $(LIBS) -ldl

$(B)/cuda/%.o: src/%.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_COMMON) $(OPT) -MMD -MP $(call simd_flags,$@) -c $< -o $@

$(B)/cuda/%.cu.o: src/%.cu $(wildcard src/compute/cuda/*.cuh) src/compute/backend.h src/compute/quant.h src/compute/compute.h include/pensieve.h
	@mkdir -p $(dir $@)
	$(NVCC) -O3 -arch=$(CUDA_ARCH) -std=c++17 -Xcompiler -fvisibility=hidden -Iinclude -Isrc -c $< -o $@

clean:
	rm -rf $(B)

# The web chat page is assembled into web.o (.incbin), which -MMD does not see.
$(B)/obj/server/web.o $(B)/asan/server/web.o $(B)/cuda/server/web.o: src/server/web_page.html

-include $(OBJ:.o=.d) $(CLI_OBJ:.o=.d) $(ASAN_OBJ:.o=.d) $(patsubst %.o,%.d,$(filter-out %.cu.o,$(CUDA_OBJ))) $(wildcard $(B)/fuzz/obj/*/*.d $(B)/fuzz/obj/*/*/*.d)
