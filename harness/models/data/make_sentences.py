"""Regenerate sentences.tsv: real English sentences from the docstrings of Python's standard library.

    .venv/bin/python harness/models/data/make_sentences.py [--check]

The shipped sentences.tsv was made with CPython 3.11.7; another Python version finds other
docstrings, so the file is committed rather than rebuilt at run time (--check says whether
this interpreter reproduces it). Columns: split (calib | eval), source (module.qualname), text.
"""
from __future__ import annotations

import argparse
import importlib
import inspect
import random
import re
import sys
import warnings
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT = HERE / "sentences.tsv"
SEED = 0
N_CALIB = 100
N_EVAL = 500

# Prose-rich, pure-Python modules whose docstrings read as English sentences.
MODULES = """
argparse asyncio.events asyncio.streams asyncio.tasks bisect calendar codecs collections concurrent.futures
configparser contextlib copy csv dataclasses datetime decimal difflib doctest email.message email.utils enum
filecmp fnmatch fractions ftplib functools getopt gettext glob gzip hashlib heapq hmac html.parser http.client
http.server imaplib importlib inspect io ipaddress itertools json logging logging.handlers lzma mailbox mimetypes
multiprocessing.managers multiprocessing.pool netrc numbers operator optparse os pathlib pdb pickle pkgutil platform
plistlib poplib pprint queue random re reprlib sched secrets selectors shelve shlex shutil signal smtplib socket
socketserver sqlite3 ssl statistics string struct subprocess tarfile tempfile textwrap threading timeit tokenize
trace traceback types typing unittest.case unittest.mock urllib.parse urllib.request uuid warnings weakref
xml.dom.minidom xml.etree.ElementTree zipfile zipimport
""".split()

# A word of prose: letters (with an apostrophe or hyphen), an acronym or a number, maybe with punctuation.
WORD = re.compile(r"^(?:[A-Za-z][a-z]*(?:'[a-z]+)?|[A-Z]{2,}|\d+|[a-z]+-[a-z]+)[,;:.]?$")
NOT_PROSE = re.compile(r"[{}\[\]<>=|\\$#@~^*`]")


def docstrings(module_name: str):
    """(qualified name, docstring) of the module and its public classes, functions and methods."""
    module = importlib.import_module(module_name)
    seen: set[int] = set()

    def walk(obj, qualname: str, depth: int):
        if id(obj) in seen:
            return
        seen.add(id(obj))
        doc = getattr(obj, "__doc__", None)  # its own docstring, not one inherited (as inspect.getdoc would)
        if isinstance(doc, str) and doc.strip():
            yield qualname, inspect.cleandoc(doc)
        if depth < 2 and (inspect.ismodule(obj) or inspect.isclass(obj)):
            for name, value in sorted(vars(obj).items()):
                if name.startswith("_") or not (inspect.isclass(value) or inspect.isroutine(value)):
                    continue
                if getattr(value, "__module__", module.__name__) != module.__name__:
                    continue  # re-exported from elsewhere: found under its own module, if listed
                yield from walk(value, f"{qualname}.{name}", depth + 1)

    yield from walk(module, module_name, 0)


def sentences(doc: str):
    """Sentences of the plain paragraphs: no code, lists, examples or field lists."""
    for paragraph in re.split(r"\n\s*\n", doc):
        lines = paragraph.split("\n")
        if any(line.startswith((" ", "\t", ">>>", "-", "*", "..")) for line in lines) or "::" in paragraph or ":param" in paragraph:
            continue
        text = " ".join(" ".join(line.split()) for line in lines)
        for sentence in re.split(r"(?<=[.!?])\s+(?=[A-Z])", text):
            words = sentence.split()
            if not 8 <= len(words) <= 60 or not sentence[0].isupper() or not sentence.endswith("."):
                continue
            if NOT_PROSE.search(sentence):
                continue
            if sum(1 for w in words if WORD.match(w.strip('()"'))) < 0.9 * len(words):
                continue
            yield sentence


def collect() -> list[tuple[str, str, str]]:
    found: dict[str, tuple[str, str]] = {}
    for module_name in MODULES:
        for qualname, doc in docstrings(module_name):
            for sentence in sentences(doc):
                found.setdefault(sentence.lower(), (qualname, sentence))
    items = sorted(found.values())
    random.Random(SEED).shuffle(items)
    if len(items) < N_CALIB + N_EVAL:
        raise SystemExit(f"only {len(items)} sentences found, need {N_CALIB + N_EVAL}")
    chosen = items[: N_CALIB + N_EVAL]
    return [("calib" if i < N_CALIB else "eval", source, text) for i, (source, text) in enumerate(chosen)]


def render(rows) -> str:
    return "split\tsource\ttext\n" + "".join(f"{split}\t{source}\t{text}\n" for split, source, text in rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare with the shipped file instead of writing it")
    args = parser.parse_args()
    warnings.simplefilter("ignore", DeprecationWarning)  # typing.io / typing.re announce their removal when read
    text = render(collect())
    if args.check:
        same = OUT.read_text() == text
        print(f"{OUT}: {'reproduced' if same else 'differs'} with Python {sys.version.split()[0]}")
        raise SystemExit(0 if same else 1)
    OUT.write_text(text)
    print(f"wrote {OUT} ({text.count(chr(10)) - 1} sentences) with Python {sys.version.split()[0]}")


if __name__ == "__main__":
    main()
