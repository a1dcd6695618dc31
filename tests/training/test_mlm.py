"""Masked-character pretraining: which positions are masked and how, that the encoder learns to use
the context of a masked character, and that a pretrained encoder reloads into a sentiment network."""

from __future__ import annotations

from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from deployments.runtime.tokenizer import BertChineseTokenizer  # noqa: E402
from training.config import SentimentRecipe, Settings  # noqa: E402
from training.mlm import MaskedCharLM, TokenMasker  # noqa: E402
from training.recipes.sentiment import pretrain_sentiment_encoder  # noqa: E402
from training.sentiment_model import SentimentConfig, SentimentNet  # noqa: E402

VOCAB = Path(__file__).resolve().parents[2] / "models" / "sentiment" / "vocab.txt"
PAD, UNK, CLS, SEP, MASK = 0, 1, 2, 3, 4
SPECIAL = {PAD, UNK, CLS, SEP}
TINY = {
    "char_dim": 16,
    "bigram_buckets": 101,
    "bigram_dim": 8,
    "trigram_buckets": 103,
    "trigram_dim": 8,
    "hidden": 32,
    "dilations": [1, 2],
    "dropout": 0.0,
}


def batch(rows: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """``[CLS] ids [SEP]`` rows padded with [PAD]."""
    width = max(len(r) for r in rows) + 2
    ids = torch.full((len(rows), width), PAD, dtype=torch.int64)
    mask = torch.zeros((len(rows), width), dtype=torch.int64)
    for i, row in enumerate(rows):
        ids[i, : len(row) + 2] = torch.tensor([CLS, *row, SEP])
        mask[i, : len(row) + 2] = 1
    return ids, mask


def test_the_masker_chooses_real_tokens_and_corrupts_them_80_10_10() -> None:
    g = torch.Generator().manual_seed(0)
    rows = [torch.randint(5, 60, (int(n),), generator=g).tolist() for n in torch.randint(1, 120, (400,), generator=g)]
    rows[0] = [7]  # one real token: it must still be chosen
    ids, mask = batch(rows)
    masker = TokenMasker(mask_id=MASK, special_ids=SPECIAL, vocab_size=60)
    corrupted, chosen = masker(ids, mask, g)

    real = mask.bool() & (ids != CLS) & (ids != SEP)
    assert not (chosen & ~real).any(), "a special or pad position was chosen"
    assert chosen.any(dim=1).all(), "a row got no masked position"
    assert bool(chosen[0, 1])
    assert torch.equal(corrupted[~chosen], ids[~chosen]), "an unchosen position changed"
    rate = chosen.sum().item() / real.sum().item()
    assert 0.14 < rate < 0.16
    picked, original = corrupted[chosen], ids[chosen]
    masked = (picked == MASK).float().mean().item()
    replaced = (picked != original) & (picked != MASK)
    kept = (picked == original).float().mean().item()
    assert 0.78 < masked < 0.82
    assert 0.08 < kept < 0.12
    assert 0.07 < replaced.float().mean().item() < 0.11  # a random draw can hit the original id
    assert not any(int(t) in SPECIAL | {MASK} for t in picked[replaced]), "a random replacement was special"


def train_lm(rows_fn, steps: int) -> float:
    """Accuracy at [MASK] of a tiny encoder on a fresh batch after ``steps`` of pretraining."""
    torch.manual_seed(0)
    net = SentimentNet(SentimentConfig(vocab_size=40, **TINY))
    model = MaskedCharLM(net.encoder, TINY["hidden"], 40)
    for module in model.modules():  # dense gradients, so one plain Adam trains every weight
        if isinstance(module, torch.nn.Embedding):
            module.sparse = False
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    masker = TokenMasker(mask_id=MASK, special_ids=SPECIAL, vocab_size=40)
    g = torch.Generator().manual_seed(1)
    for _ in range(steps):
        ids, mask = batch(rows_fn(g))
        corrupted, chosen = masker(ids, mask, g)
        loss, _ = model.loss(corrupted, mask, ids, chosen)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        ids, mask = batch(rows_fn(g))
        corrupted, chosen = masker(ids, mask, g)
        # Only the [MASK]ed positions: at the 10 % kept ones the answer is in the input.
        hidden = model.encoder(corrupted, mask)[corrupted == MASK]
        return (model.head(hidden).argmax(-1) == ids[corrupted == MASK]).float().mean().item()


def test_the_encoder_learns_a_masked_character_from_its_context() -> None:
    # Rows count up by one from a random start (mod 35, ids 5…39): each token follows from its neighbours.
    def counting(g: torch.Generator) -> list[list[int]]:
        starts = torch.randint(0, 35, (32,), generator=g).tolist()
        return [[5 + (s + i) % 35 for i in range(24)] for s in starts]

    # Control: the same token distribution with no context to use.
    def random_rows(g: torch.Generator) -> list[list[int]]:
        return torch.randint(5, 40, (32, 24), generator=g).tolist()

    assert train_lm(counting, 150) > 0.9
    assert train_lm(random_rows, 150) < 0.1  # chance is 1/35


def test_a_pretrained_encoder_changes_and_reloads_into_a_sentiment_net(tmp_path) -> None:
    tokenizer = BertChineseTokenizer.from_vocab_file(VOCAB, lowercase=True)
    config = SentimentConfig(vocab_size=tokenizer.vocab_size, **TINY)
    torch.manual_seed(0)
    net = SentimentNet(config)
    before = {k: v.clone() for k, v in net.encoder.state_dict().items()}
    recipe = SentimentRecipe(train_tokens=64, pretrain_lr=2e-3, pretrain_epochs=1)
    settings = Settings(batch_tokens=512, seed=1)
    texts = ["这家酒店的服务很好，房间也很干净。", "质量太差了，再也不买了", "还行吧"] * 20
    report = pretrain_sentiment_encoder(recipe, settings, net, tokenizer, texts, tmp_path)
    assert report.texts == 60 and report.epochs == 1
    assert [row["epoch"] for row in report.history] == [1]
    assert 0.0 <= report.history[0]["masked_accuracy"] <= 1.0
    after = net.encoder.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before), "pretraining changed no weight"

    saved = torch.load(tmp_path / "sentiment_pretrained.pt")
    assert saved["config"] == config.to_dict()
    fresh = SentimentNet(config)
    fresh.encoder.load_state_dict(saved["encoder"])
    ids = torch.tensor([[2, 100, 200, 300, 3]])
    mask = torch.ones_like(ids)
    net.eval(), fresh.eval()
    assert torch.equal(net.encoder(ids, mask), fresh.encoder(ids, mask))
