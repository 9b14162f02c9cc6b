"""A pretrained vision model from PyPI: PaddleOCR's text-direction classifier, on rendered text lines.

The model is `ch_ppocr_mobile_v2.0_cls_infer.onnx`, a MobileNetV3 (small, scale 0.35) that
PaddleOCR runs on every detected text line to tell upright text ('0') from text turned upside
down ('180'). It was exported from PaddlePaddle by paddle2onnx, so it is an "other exporter's"
graph: weights in Constant nodes, BatchNormalization unfused, a Softmax output, an input named
`x`. It ships inside the PyPI wheel `rapidocr-onnxruntime` (Apache-2.0, 15 MB; quantbench never
imports the package, whose own code needs OpenCV: it is installed with --no-deps and only its
model file is read), so it loads offline.

The data is made here, realistically: text lines cut from the 600 real sentences in
data/sentences.tsv (Python standard-library docstrings), rendered with the DejaVu, STIX and
Computer Modern fonts that matplotlib ships, in sizes 18-40 px, dark text on light paper of
varied tint, a slight skew, blur and sensor noise; half of them turned by 180 degrees. The label
is the turn (0 = '0', 1 = '180'), so top-1 means what it means for PaddleOCR. Preprocessing is
the package's own (TextClassifier.resize_norm_img): BGR, height 48, width up to 192 keeping the
aspect ratio, right-padded with zeros, scaled to [-1, 1]. Calibration lines come from the
calibration sentences, evaluation lines from the others: no text is in both.
"""
from __future__ import annotations

import functools
import importlib.util
import math
from pathlib import Path

import numpy as np

from harness.data import Dataset
from harness.models.spec import ModelSpec
from harness.models.minilm import read_sentences

PACKAGE = "rapidocr-onnxruntime"
MODULE = "rapidocr_onnxruntime"
MODEL_FILE = "models/ch_ppocr_mobile_v2.0_cls_infer.onnx"
INSTALL_HINT = "pip install --no-deps rapidocr-onnxruntime==1.4.4 (requirements/no-deps.txt; ./scripts/run.sh installs it)"
LABELS = ("0", "180")  # the package's label_list: class 1 is text turned upside down
HEIGHT, MAX_WIDTH = 48, 192  # cls_image_shape [3, 48, 192]
FONTS = ("DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSans-Oblique.ttf", "DejaVuSerif.ttf", "DejaVuSerif-Bold.ttf",
         "DejaVuSerif-Italic.ttf", "DejaVuSansMono.ttf", "STIXGeneral.ttf", "cmr10.ttf")
SEED = 0


def model_path() -> Path:
    """Where the packaged ONNX file is; FileNotFoundError with the install command when it is not."""
    spec = importlib.util.find_spec(MODULE)  # finds the package without importing it (its __init__ needs cv2)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"the text-direction model ships in the PyPI package {PACKAGE}, which is not installed: {INSTALL_HINT}")
    path = Path(list(spec.submodule_search_locations)[0]) / MODEL_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{PACKAGE} is installed but has no {MODEL_FILE}; reinstall it: {INSTALL_HINT}")
    return path


def installed() -> bool:
    try:
        model_path()
    except FileNotFoundError:
        return False
    return True


def _font_dir() -> Path:
    import matplotlib

    return Path(matplotlib.get_data_path()) / "fonts" / "ttf"


def _line(text: str, rng: np.random.Generator) -> str:
    """Two to six consecutive words of a sentence: the length of a detected text line."""
    words = text.split()
    count = int(rng.integers(2, 7))
    start = int(rng.integers(0, max(1, len(words) - count)))
    return " ".join(words[start:start + count])


def render(text: str, rng: np.random.Generator):
    """One text line as a PIL RGB image, as a camera or a scan would show it."""
    from PIL import Image, ImageDraw, ImageFilter, ImageFont

    font = ImageFont.truetype(str(_font_dir() / FONTS[int(rng.integers(len(FONTS)))]), int(rng.integers(18, 41)))
    left, top, right, bottom = font.getbbox(text)
    pad = [int(p) for p in rng.integers(2, 10, 4)]
    paper, ink = int(rng.integers(170, 256)), int(rng.integers(0, 90))
    tint = tuple(int(np.clip(paper + d, 0, 255)) for d in rng.integers(-20, 20, 3))
    image = Image.new("RGB", (right - left + pad[0] + pad[2], bottom - top + pad[1] + pad[3]), tint)
    ImageDraw.Draw(image).text((pad[0] - left, pad[1] - top), text, font=font, fill=(ink, ink, ink))
    image = image.rotate(float(rng.uniform(-2.0, 2.0)), resample=Image.BILINEAR, expand=True, fillcolor=tint)
    if rng.random() < 0.5:
        image = image.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.3, 1.0))))
    noisy = np.asarray(image, dtype=np.float32) + rng.normal(0.0, rng.uniform(0.0, 8.0), (image.height, image.width, 3))
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))


def preprocess(image) -> np.ndarray:
    """rapidocr's TextClassifier.resize_norm_img: (3, 48, 192) float32 in [-1, 1], BGR, right-padded."""
    from PIL import Image

    ratio = image.width / image.height
    width = MAX_WIDTH if math.ceil(HEIGHT * ratio) > MAX_WIDTH else int(math.ceil(HEIGHT * ratio))
    bgr = np.asarray(image.resize((width, HEIGHT), Image.BILINEAR), dtype=np.float32)[:, :, ::-1]
    out = np.zeros((3, HEIGHT, MAX_WIDTH), dtype=np.float32)
    out[:, :, :width] = (bgr.transpose(2, 0, 1) / 255.0 - 0.5) / 0.5
    return out


def text_lines(sentences: list[str], seed: int) -> tuple[np.ndarray, np.ndarray]:
    """One rendered line per sentence, half of them turned upside down: (images, labels)."""
    rng = np.random.default_rng(seed)
    images, labels = [], []
    for sentence in sentences:
        image = render(_line(sentence, rng), rng)
        label = int(rng.integers(0, 2))
        images.append(preprocess(image.rotate(180) if label else image))
        labels.append(label)
    return np.stack(images), np.asarray(labels, dtype=np.int64)


@functools.lru_cache(maxsize=1)
def load_data() -> Dataset:
    """500 evaluation lines (the 500 evaluation sentences) and 100 calibration lines (the others)."""
    sentences = read_sentences()
    x_calib, _ = text_lines(sentences["calib"], SEED + 1)
    x_eval, y_eval = text_lines(sentences["eval"], SEED)
    return Dataset(
        name="rendered-text-lines",
        eval_inputs={"x": x_eval},
        calib_inputs={"x": x_calib},
        eval_labels=y_eval,
        source=f"{len(x_eval)} + {len(x_calib)} text lines rendered from harness/models/data/sentences.tsv "
               "(upright or turned 180 degrees), preprocessed as rapidocr's TextClassifier",
    )


def torch_module():
    """The packaged ONNX classifier rebuilt as a torch module (harness/models/onnx_torch.py),
    checked against onnxruntime on 16 calibration lines: the torch and LiteRT rows start here."""
    from harness.models.onnx_torch import onnx_to_torch

    return onnx_to_torch(model_path(), {"x": load_data().calib_inputs["x"][:16]})


def unavailable(name: str) -> ModelSpec:
    """What a suite declares in place of the model when the package is missing: every case is
    n/a with the install command (as the MiniLM cases are without their extra)."""
    from harness.quantize.base import NotApplicable  # here, not at import: harness.quantize imports harness.models

    def missing(ctx):
        raise NotApplicable(f"the text-direction model ships in {PACKAGE}, which is not installed: {INSTALL_HINT}")

    return ModelSpec(name=name, data=load_data, torch_factory=missing, description=f"needs {PACKAGE}")
