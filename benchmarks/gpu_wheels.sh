#!/usr/bin/env bash
# Run HERE (a machine that reaches PyPI), before a GPU window: downloads the wheels the GPU machine's
# image lacks, for its Python (3.12, x86-64), into .whl/ (ignored by git). The `run` call carries .whl and
# benchmarks/gpu_window.sh pip-installs it there with --no-index (docs/PERFORMANCE.md, "GPU window").
#
#   benchmarks/gpu_wheels.sh            # pydantic (every stage needs it) + the serving packages (~6 MB)
#   ORT_GPU=1 benchmarks/gpu_wheels.sh  # also onnxruntime-gpu: about 256 MB, over the device tool's 64 MiB
#                                       # carry limit today, so not fetched by default
#
# Versions are the ones installed on this machine (the versions the test suite passes with), else the
# newest. The GPU image already has numpy, scipy, torch, transformers, tokenizers, sentencepiece,
# safetensors, httpx, anyio, h11, click, prometheus-client, onnx, onnxscript and a CPU onnxruntime
# (/work/.library/device/KINDS.md); each wheel's requirements are checked against that list at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
DEST=${WHEELS:-.whl}
PY=${PYTHON:-python3}
PACKAGES=(pydantic pydantic-core annotated-types typing-inspection typing-extensions
          fastapi starlette annotated-doc opentelemetry-api uvicorn pydantic-settings python-dotenv redis)
if [ "${ORT_GPU:-0}" = 1 ]; then PACKAGES+=(onnxruntime-gpu); fi

pins=()
for name in "${PACKAGES[@]}"; do
    version=$("$PY" -c "import importlib.metadata as m, sys
try: print(m.version(sys.argv[1]))
except m.PackageNotFoundError: pass" "$name")
    pins+=("${name}${version:+==$version}")
done
mkdir -p "$DEST"
"$PY" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d "$DEST" "${pins[@]}"

# one version per package (two stop the install there), and every requirement carried or in the image
"$PY" - "$DEST" <<'PYEOF'
import email, re, sys, zipfile
from collections import Counter
from pathlib import Path

IMAGE = {"numpy", "scipy", "torch", "transformers", "tokenizers", "sentencepiece", "safetensors", "httpx",
         "httpcore", "anyio", "h11", "idna", "certifi", "sniffio", "click", "prometheus-client", "onnx",
         "onnxscript", "onnxruntime", "packaging", "protobuf", "coloredlogs", "flatbuffers", "sympy"}
norm = lambda s: re.sub(r"[-_.]+", "-", s).lower()
wheels = sorted(Path(sys.argv[1]).glob("*.whl"))
names = Counter(norm(w.name.split("-")[0]) for w in wheels)
problems = [f"{n}: {k} versions" for n, k in names.items() if k > 1]
for wheel in wheels:
    with zipfile.ZipFile(wheel) as z:
        meta = next(p for p in z.namelist() if p.endswith(".dist-info/METADATA"))
        msg = email.message_from_bytes(z.read(meta))
    for req in msg.get_all("Requires-Dist") or []:
        if "extra ==" in req or ("python_version" in req and "< '3.1" in req) or "python_full_version" in req:
            continue
        dep = norm(re.split(r"[ ;<>=!~\[(]", req, maxsplit=1)[0])
        if dep not in names and dep not in IMAGE:
            problems.append(f"{wheel.name} needs {req!r}: neither carried nor in the GPU image")
size = sum(w.stat().st_size for w in wheels) / 2**20
print(f"{len(wheels)} wheels in {sys.argv[1]} ({size:.1f} MiB): " + ", ".join(sorted(names)))
if problems:
    print("check:\n  " + "\n  ".join(problems))
    sys.exit(1)
PYEOF
