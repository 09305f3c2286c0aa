"""What the user names as data: `--data` values and data-config YAML files, turned into `DataSource`s.

A `--data` value is one of
    PATH                                the layout is detected (see `detect_kind`)
    KIND:PATH                           the layout named, e.g. visa:/data/VisA
    KEY=VALUE,KEY=VALUE,...             every option, e.g. kind=folder,normal=DIR,test=DIR1;DIR2,masks=DIR
A data config holds `datasets:`, a list of mappings with the same keys; its relative paths start at its folder.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from mala.errors import ConfigError, DataError

DEFAULT_VISA_CSV = "split_csv/1cls.csv"
COMMON_KEYS = ("kind", "name", "categories")
KIND_KEYS = {  # the options each layout takes besides COMMON_KEYS
    "mvtec": ("root",),
    "visa": ("root", "split_csv"),
    "ksdd2": ("root",),
    "mt": ("root", "seed"),
    "folder": ("normal", "test", "masks", "category"),
}
KINDS = tuple(KIND_KEYS)
ALL_KEYS = {*COMMON_KEYS, *(key for keys in KIND_KEYS.values() for key in keys)}
LIST_SEPARATOR = ";"  # in KEY=VALUE form, as `,` separates the options
_KIND_PREFIX = re.compile(rf"^({'|'.join(KINDS)}):(.+)$")
_KEY_VALUE = re.compile(r"^([a-z_]+)=")


@dataclass(frozen=True)
class DataSource:
    """One dataset: its layout, where it lies, its name, which of its categories, and layout options."""

    kind: str | None = None  # None: detected from `root`
    root: Path | None = None
    name: str | None = None  # None: the root folder's name (kind folder: the folder that holds all its folders)
    categories: tuple[str, ...] | None = None  # None: all; names as in the dataset, without any prefix
    split_csv: str = DEFAULT_VISA_CSV  # visa: the split file, relative to the root
    seed: int = 0  # mt: the 75/25 train/test split of the normal images
    normal: Path | None = None  # folder: normal training images
    test: tuple[Path, ...] = ()  # folder: test folders, each named after its defect (`good`: normal)
    masks: Path | None = None  # folder: masks, matched to test images by file name
    category: str | None = None  # folder: the category name [the dataset name]

    def dataset_name(self) -> str:
        if self.name:
            return self.name
        if self.kind == "folder":
            folders = [os.path.abspath(p) for p in (self.normal, *self.test, self.masks) if p is not None]
            return Path(os.path.commonpath(folders)).name or "folder"
        return Path(os.path.abspath(self.root)).name

    def describe(self) -> str:
        """Where it lies, for messages."""
        return str(self.root if self.root is not None else self.normal)


def parse_data_arg(text: str) -> DataSource:
    """One `--data` value; relative paths start at the working directory."""
    where = f"--data {text!r}"
    if (match := _KEY_VALUE.match(text)) and match.group(1) in ALL_KEYS:
        return source_from_mapping(_key_values(text, where), where, Path())
    if match := _KIND_PREFIX.match(text):
        return source_from_mapping({"kind": match.group(1), "root": match.group(2)}, where, Path())
    return source_from_mapping({"root": text}, where, Path())


def _key_values(text: str, where: str) -> dict[str, str]:
    values: dict[str, str] = {}
    for item in text.split(","):
        key, sep, value = item.partition("=")
        if not sep or key in values:
            raise ConfigError(f"{where}: expected KEY=VALUE items separated by commas, each key once; got {item!r}")
        values[key] = value
    return values


def read_data_config(path: Path) -> list[DataSource]:
    """The datasets of a data-config YAML file."""
    try:
        content = yaml.safe_load(Path(path).read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: data config not found") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({' '.join(str(exc).split())})") from None
    if not isinstance(content, dict) or set(content) != {"datasets"} or not isinstance(content["datasets"], list):
        raise ConfigError(f"{path}: expected one key, `datasets:`, holding a list of datasets")
    if not content["datasets"]:
        raise ConfigError(f"{path}: `datasets:` is empty")
    base = Path(path).parent
    return [source_from_mapping(entry, f"{path}: datasets[{i}]", base) for i, entry in enumerate(content["datasets"])]


def data_sources(data: list[str] | None, data_config: Path | None) -> list[DataSource]:
    """The sources of `--data` values and a `--data-config` file together."""
    sources = [parse_data_arg(str(text)) for text in data or []]
    if data_config is not None:
        sources += read_data_config(data_config)
    if not sources:
        raise ConfigError("no data: give --data PATH ... or --data-config FILE")
    return sources


def source_from_mapping(values: Any, where: str, base: Path) -> DataSource:
    """A DataSource from option values (strings from `--data`, or YAML values); unknown or misplaced keys fail."""
    if not isinstance(values, dict):
        raise ConfigError(f"{where}: expected a mapping of options, got {type(values).__name__}")
    kind = values.get("kind")
    if kind is not None and kind not in KINDS:
        raise ConfigError(f"{where}: unknown kind {kind!r}; known: {', '.join(KINDS)}")
    allowed = (*COMMON_KEYS, *KIND_KEYS[kind]) if kind else (*COMMON_KEYS, "root")
    unknown = sorted(set(values) - set(allowed))
    if unknown:
        hint = "" if kind else " (layout options need an explicit kind)"
        raise ConfigError(f"{where}: unknown option(s) {', '.join(unknown)}; {kind or 'here'} takes "
                          f"{', '.join(allowed)}{hint}")
    required = "normal" if kind == "folder" else "root"
    if not values.get(required):
        raise ConfigError(f"{where}: {required} is missing")
    return DataSource(
        kind=kind,
        root=_path(values.get("root"), base),
        name=_text(values.get("name"), "name", where),
        categories=_texts(values.get("categories", ()), "categories", where) or None,
        split_csv=_text(values.get("split_csv"), "split_csv", where) or DEFAULT_VISA_CSV,
        seed=_integer(values.get("seed", 0), "seed", where),
        normal=_path(values.get("normal"), base),
        test=tuple(_path(p, base) for p in _texts(values.get("test", ()), "test", where)),
        masks=_path(values.get("masks"), base),
        category=_text(values.get("category"), "category", where),
    )


def _text(value: Any, key: str, where: str) -> str | None:
    if value is None or isinstance(value, str):
        return value or None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)  # YAML reads a name like 2024 as a number
    raise ConfigError(f"{where}: {key} must be text, got {value!r}")


def _texts(value: Any, key: str, where: str) -> tuple[str, ...]:
    """A list, or one string with `;` between items."""
    items = value.split(LIST_SEPARATOR) if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)):
        raise ConfigError(f"{where}: {key} must be a list, got {value!r}")
    return tuple(text for item in items if (text := _text(item, key, where)))


def _integer(value: Any, key: str, where: str) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: {key} must be an integer, got {value!r}") from None


def _path(value: Any, base: Path) -> Path | None:
    return base / Path(str(value)).expanduser() if value not in (None, "") else None


def detect_kind(root: Path) -> str:
    """The layout of a data root, from the first of these it holds (checked in this order):
    split_csv/1cls.csv (VisA), MT_Free/ (MT), train/ and test/ with *_GT.png (KolektorSDD2), CATEGORY/train (MVTec).
    """
    if not root.is_dir():
        raise DataError(f"{root}: data folder not found")
    if (root / DEFAULT_VISA_CSV).is_file():
        return "visa"
    if (root / "MT_Free").is_dir():
        return "mt"
    splits = [root / "train", root / "test"]
    if all(p.is_dir() for p in splits) and any(next(p.glob("*_GT.png"), None) for p in splits):
        return "ksdd2"
    if (root / "train").is_dir() or any((p / "train").is_dir() for p in root.iterdir()):
        return "mvtec"
    raise DataError(
        f"{root}: no known dataset layout (looked for CATEGORY/train, {DEFAULT_VISA_CSV}, train/*_GT.png, "
        "MT_Free); name the kind, e.g. mvtec:PATH or kind=folder,normal=DIR,test=DIR"
    )
