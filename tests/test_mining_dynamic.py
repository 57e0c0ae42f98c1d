"""Dynamic (Conan-style) re-mining: the easy rule, refreshes, the dataset view, state, ranks, training."""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest
import yaml

from embedtrain.errors import CheckpointError, RecipeError
from embedtrain.mining.dynamic import DynamicMiner, Retriever, is_easy
from embedtrain.mining.table import ROW_COLUMN, NegativeTable, collate_recording_rows
from embedtrain.schema.mining import DynamicMiningConfig


def make_table(rows: int = 4, n: int = 2, candidates: int = 4) -> NegativeTable:
    ranked = [[f"neg {r}.{j}" for j in range(n + candidates)] for r in range(rows)]
    return NegativeTable("toy", [f"query {r}" for r in range(rows)], [f"pos {r}" for r in range(rows)], ranked, n)


class ScriptedScores:
    """A scorer factory whose scores come from a dict row -> score; records which rows were scored."""

    def __init__(self, scores: dict[int, float]) -> None:
        self.scores = scores
        self.scored: list[list[int]] = []

    def __call__(self, model):
        def score(rows):
            self.scored.append(list(rows))
            return np.array([self.scores[r] for r in rows])
        return score


def test_easy_rule_follows_conan():
    cfg = DynamicMiningConfig()  # easy_ratio 1.15, easy_abs 0.8
    assert is_easy(0.5, 0.6, cfg)            # 0.5 < 0.6 / 1.15 = 0.522
    assert not is_easy(0.53, 0.6, cfg)       # not enough easier
    assert not is_easy(0.85, 1.2, cfg)       # |current| >= 0.8 still counts as hard
    assert not is_easy(float("nan"), 0.6, cfg)
    assert is_easy(0.3, 0.4, DynamicMiningConfig(easy_ratio=1.2, easy_abs=0.35))


def test_round_replaces_easy_negatives_with_the_next_window_and_keeps_the_rest():
    table = make_table(rows=4, n=2, candidates=2)  # each row: 2 negatives + one further window of 2
    scores = ScriptedScores({0: 0.6, 1: 0.6, 2: 0.6, 3: 0.6})
    miner = DynamicMiner(table, DynamicMiningConfig(scope="all"), scorer_factory=scores)
    miner.initialize(model=None)
    assert table.initial.tolist() == [0.6] * 4
    scores.scores.update({0: 0.3, 1: 0.58, 2: 0.9, 3: 0.2})  # rows 0 and 3 got easy; 1 barely moved
    report = miner.run_round(model=None, step=100)
    assert table.negatives(0) == ["neg 0.2", "neg 0.3"] and table.negatives(3) == ["neg 3.2", "neg 3.3"]
    assert table.negatives(1) == ["neg 1.0", "neg 1.1"] and table.negatives(2) == ["neg 2.0", "neg 2.1"]
    assert (report.rescored, report.easy, report.refreshed, report.exhausted) == (4, 2, 2, 0)
    assert report.mean_current == pytest.approx(0.495) and report.mean_initial == pytest.approx(0.6)
    # the refreshed rows were re-scored and that score is their new 'initial'
    assert scores.scored[-1] == [0, 3]
    assert table.initial[[0, 3]].tolist() == [0.3, 0.2] and table.initial[1] == 0.6
    # a second time row 0 is easy again but its candidates are used up: it keeps its negatives
    scores.scores.update({0: 0.1})
    report = miner.run_round(model=None, step=200)
    assert table.negatives(0) == ["neg 0.2", "neg 0.3"] and report.exhausted == 1
    assert [h["step"] for h in table.history] == [100, 200]


def test_seen_scope_and_the_rescore_cap():
    table = make_table(rows=6)
    scores = ScriptedScores({r: 0.5 for r in range(6)})
    miner = DynamicMiner(table, DynamicMiningConfig(max_rescore=2), scorer_factory=scores)
    miner.initialize(None)
    table.record([4, 1, 5])
    rows = miner.round_rows(step=7)
    assert len(rows) == 2 and set(rows) <= {1, 4, 5}
    assert table.take_seen() == []  # the round consumed the record
    twin = make_table(rows=6)  # the capped subset is a function of (seed, step): same on every rank
    twin.record([5, 4, 1])
    assert DynamicMiner(twin, miner.config, scorer_factory=scores).round_rows(7) == rows


def test_dataset_view_reads_current_negatives_and_chains_the_dataset_name_transform():
    from functools import partial

    from datasets import Dataset
    from sentence_transformers import SentenceTransformerTrainer

    table = make_table(rows=3, n=2)
    base = Dataset.from_dict({"anchor": table.anchors, "positive": [table.positive(r) for r in range(3)],
                              "negative_1": ["x"] * 3, "negative_2": ["y"] * 3})
    view = table.wrap(base)
    row = view[1]
    assert row.pop(ROW_COLUMN).endswith(":1")  # the row travels as a tag to the collator
    assert row == {"anchor": "query 1", "positive": "pos 1", "negative_1": "neg 1.0", "negative_2": "neg 1.1"}
    table.advance(1)
    assert view[1]["negative_1"] == "neg 1.2"
    # what sentence-transformers does for multi-dataset runs: a set_transform that wraps ours
    view.set_transform(partial(SentenceTransformerTrainer.add_dataset_name_transform, dataset_name="toy",
                               **view._format_kwargs))
    batch = view[[0, 1]]
    assert batch["negative_2"] == ["neg 0.1", "neg 1.3"] and batch["dataset_name"] == ["toy", "toy"]
    assert table.take_seen() == []  # reads (the sampler's, a resume's skipped batches) are not training
    # the collator records the rows it collates and drops their tags before tokenising
    collated = []
    collate = collate_recording_rows(collated.append, [table])
    collate([view[1], view[0]])
    collate([view[2]])  # fetched ahead: not trained yet
    assert table.take_seen() == [] and all(ROW_COLUMN not in f for f in collated[0])
    collate.commit(1)
    assert table.take_seen() == [0, 1]
    collate.commit(1)
    assert table.take_seen() == [2]


def test_state_round_trips_and_refuses_other_data(tmp_path):
    table = make_table()
    table.initial[:] = [0.1, 0.2, 0.3, 0.4]
    table.advance(2)
    table.history.append({"step": 5, "refreshed": 1})
    path = table.save(tmp_path / "state.npz")
    fresh = make_table()
    fresh.load(path)
    assert fresh.negatives(2) == table.negatives(2) == ["neg 2.2", "neg 2.3"]
    assert fresh.cursor.tolist() == table.cursor.tolist() and fresh.initial.tolist() == [0.1, 0.2, 0.3, 0.4]
    assert fresh.history == [{"step": 5, "refreshed": 1}] and fresh.refresh_count[2] == 1
    other = make_table(candidates=3)
    with pytest.raises(CheckpointError, match="different data"):
        other.load(path)
    with pytest.raises(CheckpointError, match="no dynamic mining state"):
        other.load(tmp_path / "missing.npz")


class ThreadCollective:
    """Two 'ranks' in threads sharing an all-gather, to test that every rank ends with the same table."""

    def __init__(self, world_size: int) -> None:
        self.world_size = world_size
        self.barrier = threading.Barrier(world_size)
        self.slots: list = [None] * world_size
        self.gathers = 0

    def rank_view(self, rank: int):
        parent = self

        class View:
            def __init__(self):
                self.rank, self.world_size = rank, parent.world_size

            def all_gather_object(self, obj):
                parent.slots[rank] = obj
                parent.barrier.wait()
                out = list(parent.slots)
                parent.barrier.wait()
                return out

        return View()


def test_ranks_split_the_scoring_and_end_with_identical_tables():
    world = ThreadCollective(2)
    base_scores = {r: 0.6 for r in range(8)}
    later = {r: (0.2 if r % 3 == 0 else 0.59) for r in range(8)}  # rows 0, 3, 6 get easy
    results, scored_by_rank = {}, {}

    def run(rank: int):
        table = make_table(rows=8)
        scores = ScriptedScores(dict(base_scores))
        miner = DynamicMiner(table, DynamicMiningConfig(), scorer_factory=scores, collective=world.rank_view(rank))
        miner.initialize(None)
        # each rank read different rows (its share of the batches); the round must use the union
        table.record([0, 1, 2, 3] if rank == 0 else [4, 5, 6])
        scores.scores.update(later)
        miner.run_round(None, step=10)
        results[rank] = table
        scored_by_rank[rank] = scores.scored

    threads = [threading.Thread(target=run, args=(r,)) for r in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    a, b = results[0], results[1]
    assert (a.current_ids == b.current_ids).all() and np.array_equal(a.initial, b.initial)
    assert [a.negatives(r)[0] for r in (0, 3, 6)] == ["neg 0.2", "neg 3.2", "neg 6.2"]
    assert a.negatives(1)[0] == "neg 1.0"
    # the round re-scored rows 0..6 split by stride: rank 0 took 0,2,4,6 and rank 1 took 1,3,5
    assert scored_by_rank[0][1] == [0, 2, 4, 6] and scored_by_rank[1][1] == [1, 3, 5]


class LookupModel:
    """Minimal encoder: fixed 2-D direction per text (degrees), eval/train mode tracked."""

    training = True

    def __init__(self, angles):
        self.angles = angles

    def encode(self, texts, prompt=None, **kwargs):
        self.training = False
        rad = np.radians([self.angles[t] for t in texts])
        return np.stack([np.cos(rad), np.sin(rad)], axis=1).astype(np.float32)

    def train(self, mode=True):
        self.training = mode
        return self


def test_fresh_retrieval_excludes_positives_current_negatives_and_the_window():
    from embedtrain.mining.collective import LocalCollective

    table = NegativeTable("r", ["q0", "q0"], ["p0", "p1"], [["n0", "n1"], ["n0", "n1"]], 1,
                          extra_texts=["c1", "c2", "c3", "c4", "c5"])
    angles = {"q0": 0, "p0": 1, "p1": 2, "n0": 3, "n1": 4, "c1": 5, "c2": 10, "c3": 20, "c4": 30, "c5": 90}
    model = LookupModel(angles)
    cfg = DynamicMiningConfig(source="retrieve", scope="all", range_min=1, range_max=10, max_score=0.95)
    retriever = Retriever(table, range(len(table.texts)), cfg)
    new = retriever(model, [0], LocalCollective())
    # ranked from q0: p0, p1 (positives of q0: excluded), n0 (current negative: excluded), n1 (rank 0:
    # below range_min), c1 (5 deg) and c2 (10 deg) score above max_score 0.95, c3 (20 deg, 0.94) is kept
    assert [table.texts[j] for j in new[0]] == ["c3"]
    assert model.training is True  # put back in training mode
    miner = DynamicMiner(table, cfg, scorer_factory=ScriptedScores({0: 0.9, 1: 0.9}), retriever=retriever)
    miner.initialize(model)
    miner.scorer_factory.scores.update({0: 0.1})
    report = miner.run_round(model, step=1)
    assert table.negatives(0) == ["c3"] and table.negatives(1) == ["n0"] and report.refreshed == 1


def _hn_file(tmp_path, rows=12, candidates=6):
    path = tmp_path / "hn.jsonl"
    with path.open("w") as fh:
        for i in range(rows):
            fh.write(json.dumps({
                "anchor": f"question number {i}", "positive": f"answer number {i}",
                "negatives": [{"text": f"wrong answer {i} {j}", "score": 0.5} for j in range(2)],
                "candidates": [f"other text {i} {j}" for j in range(candidates)]}) + "\n")
    return path


def _recipe(tmp_path, model_dir, dynamic: dict, **training):
    data = {"model": {"name_or_path": str(model_dir)},
            "datasets": [{"name": "hn", "path": "hn.jsonl", "format": "hard_negatives",
                          "mining": {"dynamic": dynamic}}],
            "loss": {"name": "mnrl"},
            "training": {"max_steps": 4, "per_device_train_batch_size": 4, "save_steps": 2, "logging_steps": 2,
                         **training},
            "output_dir": str(tmp_path / "out")}
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_training_refreshes_negatives_saves_state_and_resumes(tiny_model_dir, tmp_path):
    from embedtrain.api import train
    from embedtrain.mining.dynamic import DynamicMiningCallback
    from embedtrain.schema import load_recipe

    _hn_file(tmp_path)
    # easy_ratio tiny + easy_abs > 1: every re-scored row counts as easy, so refreshes must happen
    recipe_path = _recipe(tmp_path, tiny_model_dir, {"every_steps": 2, "easy_ratio": 1e-6, "easy_abs": 1.5})
    seen: list = []

    class Spy(DynamicMiningCallback):  # observes the miner the trainer really uses
        def __init__(self):
            super().__init__([])

        def on_train_end(self, args, state, control, train_dataloader=None, **kwargs):
            seen.append(train_dataloader.dataset)

    train(load_recipe(recipe_path), callbacks=[Spy()])
    state_file = tmp_path / "out" / "checkpoint-4" / "dynamic_mining-hn.npz"
    assert state_file.exists() and (tmp_path / "out" / "checkpoint-2" / "dynamic_mining-hn.npz").exists()
    with np.load(state_file) as data:
        history = json.loads(str(data["meta"]))["history"]
        cursor = data["cursor"]
    assert [h["step"] for h in history] == [2, 4]
    assert history[0]["refreshed"] > 0 and (cursor > 2).any()
    # the training dataset now serves the refreshed negatives for those rows
    ds = seen[0].datasets[0] if hasattr(seen[0], "datasets") else seen[0]
    refreshed_row = int(np.flatnonzero(cursor > 2)[0])
    assert ds[refreshed_row]["negative_1"].startswith("other text")
    # resume continues from the saved table (no re-initialisation) and keeps the history
    recipe = load_recipe(recipe_path, ["training.max_steps=6"])
    train(recipe, resume=True)
    with np.load(tmp_path / "out" / "checkpoint-6" / "dynamic_mining-hn.npz") as data:
        history2 = json.loads(str(data["meta"]))["history"]
        cursor2 = data["cursor"]
    assert [h["step"] for h in history2] == [2, 4, 6]
    assert (cursor2 >= cursor).all()


def test_recipe_errors_name_the_mining_section(tiny_model_dir, tmp_path):
    from embedtrain.api import train
    from embedtrain.schema import load_recipe

    _hn_file(tmp_path, candidates=0)
    with pytest.raises(RecipeError, match="candidates") as err:
        train(load_recipe(_recipe(tmp_path, tiny_model_dir, {"every_steps": 2})))
    assert err.value.field == "datasets[0].mining.dynamic.source" and err.value.line is not None
    with pytest.raises(RecipeError, match="dataloader_num_workers"):
        train(load_recipe(_recipe(tmp_path, tiny_model_dir, {"every_steps": 2}, dataloader_num_workers=2)))
    with pytest.raises(RecipeError, match="unknown key 'every_step'"):
        load_recipe(_recipe(tmp_path, tiny_model_dir, {"every_step": 2}))


def test_initial_scores_can_come_from_the_mined_file(tiny_model_dir, tmp_path):
    """initial_from: file reads each row's mean negative score and skips the start-of-training scoring pass."""
    from embedtrain.mining.attach import attach_dynamic_mining, build_miners
    from embedtrain.schema import load_recipe
    from embedtrain.train.prepare import prepare_contrastive

    path = tmp_path / "hn.jsonl"
    with path.open("w") as fh:
        for i in range(4):
            fh.write(json.dumps({"anchor": f"q {i}", "positive": f"p {i}",
                                 "negatives": [{"text": f"n {i} {j}", "score": 0.1 * i + 0.2 * j} for j in range(2)],
                                 "candidates": [f"c {i} {j}" for j in range(2)]}) + "\n")
    recipe = load_recipe(_recipe(tmp_path, tiny_model_dir, {"every_steps": 2, "initial_from": "file"}))
    prepared = prepare_contrastive(recipe)
    datasets = {p.config.name: p.dataset for p in prepared}
    [callback] = attach_dynamic_mining(build_miners(recipe, prepared), datasets, None)
    [miner] = callback.miners
    scores = ScriptedScores({})  # any model scoring would raise KeyError
    miner.scorer_factory = scores
    callback.on_train_begin(None, None, None, model=None)
    assert scores.scored == []
    assert miner.table.initial.tolist() == pytest.approx([0.1 * i + 0.1 for i in range(4)])
    # without scores in the file the option is refused, naming the recipe field
    with path.open("w") as fh:
        for i in range(4):
            fh.write(json.dumps({"anchor": f"q {i}", "positive": f"p {i}", "negatives": [f"n {i} 0", f"n {i} 1"],
                                 "candidates": [f"c {i}"]}) + "\n")
    prepared = prepare_contrastive(recipe)
    with pytest.raises(RecipeError, match="initial_from: file needs a numeric 'score'") as err:
        build_miners(recipe, prepared)
    assert err.value.field == "datasets[0].mining.dynamic.initial_from"


def _gloo_worker(rank: int, world: int, port: int, out_dir: str) -> None:
    import torch.distributed as dist

    from embedtrain.mining.collective import close_collective, current_collective

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        table = make_table(rows=8)
        scores = ScriptedScores({r: 0.6 for r in range(8)})
        miner = DynamicMiner(table, DynamicMiningConfig(), scorer_factory=scores)
        miner.initialize(None)
        table.record([rank, rank + 2, 7])
        scores.scores.update({r: (0.1 if r in (2, 7) else 0.6) for r in range(8)})
        miner.run_round(None, step=5)
        kind = type(current_collective()).__name__
        close_collective()  # what the CLI does after a command: every rank waits, then the group is gone
        closed = not dist.is_initialized()
        np.savez(f"{out_dir}/rank{rank}.npz", ids=table.current_ids, scored=np.array(scores.scored[1]),
                 kind=np.array(kind), closed=np.array(closed))
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def test_two_real_processes_hold_the_same_table_after_a_round(tmp_path):
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_gloo_worker, args=(2, port, str(tmp_path)), nprocs=2, join=True)
    r0, r1 = np.load(tmp_path / "rank0.npz"), np.load(tmp_path / "rank1.npz")
    assert str(r0["kind"]) == "TorchCollective"
    assert bool(r0["closed"]) and bool(r1["closed"])
    assert (r0["ids"] == r1["ids"]).all()
    table = make_table(rows=8)
    changed = [r for r in range(8) if (r0["ids"][r] != table.current_ids[r]).any()]
    assert changed == [2, 7]  # union of what both ranks read: rows 0, 1, 2, 3, 7; easy: 2 and 7
    assert r0["scored"].tolist() == [0, 2, 7] and r1["scored"].tolist() == [1, 3]


def test_conan_window_is_the_default_and_a_negative_found_easy_is_never_picked_again():
    from embedtrain.mining.collective import LocalCollective

    cfg = DynamicMiningConfig(source="retrieve", scope="all")
    assert (cfg.range_min, cfg.range_max, cfg.window) == (10, 100, "conan")  # Conan: skip the top 10
    others = [f"c{i}" for i in range(30)]
    table = NegativeTable("conan", ["q"], ["p"], [["c10", "c11"]], 2, extra_texts=others)  # set 1 = ranks 10, 11
    angles = {"q": 0.0, "p": 0.5, **{f"c{i}": 1.0 + i for i in range(30)}}
    model = LookupModel(angles)
    scores = ScriptedScores({0: 0.9})
    miner = DynamicMiner(table, cfg, scorer_factory=scores, retriever=Retriever(table, range(len(table.texts)), cfg))
    miner.initialize(model)
    scores.scores[0] = 0.1
    miner.run_round(model, step=1)
    assert table.negatives(0) == ["c12", "c13"]  # set 2: ranks [(2-1)*2+10, 2*2+10) = [12, 14)
    # the model moves c10 (found easy in round 1) down to rank 14, the start of set 3's window [14, 16)
    angles["c10"] = 15.5
    scores.scores[0] = 0.01
    miner.run_round(model, step=2)
    assert table.negatives(0) == ["c15", "c16"]  # c10 is passed over: never picked again for this row
    assert table.retired[0] == {table.id_of(t) for t in ("c10", "c11", "c12", "c13")}
    fixed = DynamicMiningConfig(source="retrieve", scope="all", window="fixed")
    picked = Retriever(table, range(len(table.texts)), fixed)(model, [0], LocalCollective())[0]
    # fixed window: the best of ranks [10, 100) not used before (c10..c13 retired, c15/c16 current)
    assert [table.texts[j] for j in picked] == ["c14", "c17"]


def test_candidates_source_retires_easy_negatives_and_the_state_keeps_them(tmp_path):
    table = make_table(rows=2, n=2, candidates=2)
    scores = ScriptedScores({0: 0.6, 1: 0.6})
    miner = DynamicMiner(table, DynamicMiningConfig(scope="all"), scorer_factory=scores)
    miner.initialize(model=None)
    scores.scores[0] = 0.2
    miner.run_round(model=None, step=1)
    assert table.retired[0] == {table.id_of("neg 0.0"), table.id_of("neg 0.1")} and table.retired[1] == set()
    path = table.save(tmp_path / "state.npz")
    other = make_table(rows=2, n=2, candidates=2)
    other.load(path)
    assert other.retired == table.retired
