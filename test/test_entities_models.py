"""The model-backed entity pipeline, loaded through the product's code from tiny random-init models saved to disk.

BLIP-2 (T5 and OPT language models), T5 and CLIP text towers (open_clip and transformers) are built from configs with
random weights and offline tokenizers, saved to a temporary folder (or a fake Hugging Face cache) and loaded by
``Blip2Captioner``, ``T5EntityExtractor``, ``ClipTextEncoder`` / ``get_text_encoder``. Their outputs are gibberish;
the tests check the plumbing, shapes, normalisation and the errors. MiniLM is tested with its real weights.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from egmt_ros.entities.captioner import Blip2Captioner, to_pil_rgb
from egmt_ros.model.text import SHARED_CACHE, ClipTextEncoder, TextFeatureCache, get_text_encoder
from egmt_ros.entities.extractor import T5EntityExtractor, get_extractor, normalize_entity
from egmt_ros.model.loading import ModelNotFoundError, resolve_model
from egmt_ros.entities.sources import CaptionEntitySource

WORDS = ("a the person people car cars street tree trees dog bus man men two of on in and with near photo black "
         "white road building sky , .").split()


def _t5_tokenizer():  # noqa: ANN202
    from transformers import T5TokenizerFast

    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)] + [("\u2581" + w, -1.0) for w in WORDS]
    vocab += [(c, -5.0) for c in "abcdefghijklmnopqrstuvwxyz,."]
    return T5TokenizerFast(vocab=vocab, extra_ids=0)


def _t5_config(vocab_size: int, tok):  # noqa: ANN001, ANN202
    from transformers import T5Config

    return T5Config(vocab_size=vocab_size, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_decoder_layers=2,
                    num_heads=4, decoder_start_token_id=tok.pad_token_id, pad_token_id=tok.pad_token_id,
                    eos_token_id=tok.eos_token_id)


def _blip2(folder: Path, lm: str) -> Path:
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import (Blip2Config, Blip2ForConditionalGeneration, Blip2Processor, BlipImageProcessor,
                              OPTConfig, PreTrainedTokenizerFast)

    torch.manual_seed(0)
    if lm == "t5":
        tok = _t5_tokenizer()
    else:
        vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2}
        for w in WORDS:
            vocab.setdefault(w, len(vocab))
        t = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
        t.pre_tokenizer = pre_tokenizers.Whitespace()
        tok = PreTrainedTokenizerFast(tokenizer_object=t, pad_token="<pad>", eos_token="</s>", bos_token="</s>",
                                      unk_token="<unk>")
    proc = Blip2Processor(image_processor=BlipImageProcessor(size={"height": 32, "width": 32}), tokenizer=tok,
                          num_query_tokens=4)  # adds the <image> token to the tokenizer
    n_vocab = len(proc.tokenizer)
    if lm == "t5":
        text = _t5_config(n_vocab, proc.tokenizer).to_dict()
    else:
        text = OPTConfig(vocab_size=n_vocab, hidden_size=32, ffn_dim=64, num_hidden_layers=2, num_attention_heads=4,
                         word_embed_proj_dim=32, pad_token_id=0, bos_token_id=1, eos_token_id=1,
                         max_position_embeddings=64).to_dict()
    cfg = Blip2Config(
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4,
                           image_size=32, patch_size=8),
        qformer_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4,
                            encoder_hidden_size=32, vocab_size=64),
        text_config=text, num_query_tokens=4, image_token_index=proc.tokenizer.convert_tokens_to_ids("<image>"))
    Blip2ForConditionalGeneration(cfg).save_pretrained(folder)
    proc.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Tiny models saved to disk: blip2_t5, blip2_opt, t5, open_clip dir/file, hf_clip."""
    import open_clip
    from open_clip.model import CLIP
    from transformers import CLIPConfig, CLIPModel, CLIPTokenizer, T5ForConditionalGeneration

    root = tmp_path_factory.mktemp("tiny_models")
    out = {"blip2_t5": _blip2(root / "blip2_t5", "t5"), "blip2_opt": _blip2(root / "blip2_opt", "opt")}

    torch.manual_seed(1)
    tok = _t5_tokenizer()
    T5ForConditionalGeneration(_t5_config(len(tok), tok)).save_pretrained(root / "t5")
    tok.save_pretrained(root / "t5")
    out["t5"] = root / "t5"

    # open_clip: a tiny architecture (text width 32, embed 48), as a folder and as a named config + checkpoint file
    oc_cfg = {"embed_dim": 48,
              "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 16, "head_width": 16},
              "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2}}
    torch.manual_seed(2)
    ref = CLIP(**oc_cfg).eval()
    (root / "oc").mkdir()
    (root / "oc" / "open_clip_config.json").write_text(json.dumps({"model_cfg": oc_cfg, "preprocess_cfg": {}}))
    torch.save(ref.state_dict(), root / "oc" / "open_clip_pytorch_model.bin")
    (root / "egmt-tiny-clip.json").write_text(json.dumps(oc_cfg))
    open_clip.add_model_config(root / "egmt-tiny-clip.json")
    out["oc"], out["oc_file"] = root / "oc", root / "oc" / "open_clip_pytorch_model.bin"
    with torch.no_grad():
        tokens = open_clip.get_tokenizer("egmt-tiny-clip")(["person", "car", "tree"])
        feats = ref.encode_text(tokens, normalize=True).numpy()
    np.save(root / "oc_ref.npy", feats)
    out["oc_ref"] = root / "oc_ref.npy"

    # transformers CLIP (full CLIPModel, as openai/clip-vit-large-patch14 is stored) with a tiny BPE vocabulary
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for c in "abcdefghijklmnopqrstuvwxyz":
        vocab[c] = len(vocab)
        vocab[c + "</w>"] = len(vocab)
    for w in ("person", "car", "tree", "street", "dog"):
        vocab[w + "</w>"] = len(vocab)
    torch.manual_seed(3)
    hf_cfg = CLIPConfig(
        text_config=dict(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, max_position_embeddings=32, bos_token_id=0, eos_token_id=1,
                         pad_token_id=1),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4,
                           image_size=32, patch_size=16),
        projection_dim=40)
    CLIPModel(hf_cfg).save_pretrained(root / "hf_clip")
    CLIPTokenizer(vocab=vocab, merges=[]).save_pretrained(root / "hf_clip")
    out["hf_clip"] = root / "hf_clip"
    return out


def _images() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.random((40, 52), dtype=np.float32), rng.random((40, 52, 3), dtype=np.float32)


# ------------------------------------------------------------------ captioner
@pytest.mark.parametrize("lm", ["blip2_t5", "blip2_opt"])
def test_blip2_captions(models: dict[str, Path], lm: str) -> None:
    cap = Blip2Captioner(str(models[lm]), max_new_tokens=5, num_beams=2)
    ir, vi = _images()
    pair = cap.caption_pair(ir, vi)
    assert isinstance(pair, tuple) and len(pair) == 2 and all(isinstance(c, str) for c in pair)
    assert pair == (cap.caption(ir), cap.caption(vi))  # batched == one by one
    assert any(pair)  # something was generated
    assert all(len(c.split()) <= 5 for c in pair)
    assert isinstance(cap.caption((vi * 255).astype(np.uint8)), str)


def test_blip2_decoder_only_prompt_is_not_returned(models: dict[str, Path]) -> None:
    cap = Blip2Captioner(str(models["blip2_opt"]), prompt="a photo of", max_new_tokens=3, num_beams=1)
    text = cap.caption(_images()[1])
    assert len(text.split()) <= 3 and not text.startswith("a photo of")


def test_to_pil_rgb_conversions() -> None:
    grey = np.array([[0.0, 1.0]], dtype=np.float32)
    assert np.asarray(to_pil_rgb(grey)).tolist() == [[[0, 0, 0], [255, 255, 255]]]
    assert np.asarray(to_pil_rgb(np.full((2, 2), 65535, np.uint16)))[0, 0].tolist() == [255, 255, 255]
    with pytest.raises(ValueError):
        to_pil_rgb(np.zeros((2, 2, 2)))


# ------------------------------------------------------------------ extractor
def test_t5_extractor_runs_and_normalises(models: dict[str, Path]) -> None:
    ex = get_extractor(str(models["t5"]), max_new_tokens=8)
    assert isinstance(ex, T5EntityExtractor)
    ents = ex.extract("a man walking next to two cars")
    assert isinstance(ex.raw("a dog"), str)
    assert len(ents) <= 8 and len(set(ents)) == len(ents)
    assert all(normalize_entity(e) == e for e in ents)  # every output is in normal form
    assert ex.extract("") == []


def test_t5_extractor_parses_a_model_answer(models: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    ex = T5EntityExtractor(str(models["t5"]), max_new_tokens=4)
    monkeypatch.setattr(ex, "raw", lambda caption: "Two People, a car, Cars, the Traffic Lights; a photo and trees")
    assert ex.extract("anything") == ["person", "car", "traffic light", "tree"]
    with pytest.raises(ValueError):
        T5EntityExtractor(str(models["t5"]), prompt="no placeholder")


def test_caption_source_with_tiny_models(models: dict[str, Path]) -> None:
    src = CaptionEntitySource(Blip2Captioner(str(models["blip2_t5"]), max_new_tokens=6),
                              T5EntityExtractor(str(models["t5"]), max_new_tokens=8))
    ir, vi = _images()
    es = src.extract(ir, vi, stamp=7.0)
    assert isinstance(es.captions["ir"], str) and isinstance(es.captions["vi"], str)
    assert len(es.entities) <= 8 and all(e.source == "caption" for e in es.entities)
    assert es.stamp == 7.0 and set(src.last_timings) == {"caption", "extract"}


# ------------------------------------------------------------------ loading: cache and errors
def _fake_hf_cache(cache: Path, repo_id: str, folder: Path) -> None:
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    shutil.copytree(folder, repo / "snapshots" / commit)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)


def test_models_load_from_the_hf_cache_by_id(models: dict[str, Path], tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path / "hub"
    _fake_hf_cache(cache, "egmt-test/tiny-flan-t5", models["t5"])
    _fake_hf_cache(cache, "egmt-test/tiny-blip2", models["blip2_t5"])
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    assert resolve_model("egmt-test/tiny-flan-t5").parent.parent.name == "models--egmt-test--tiny-flan-t5"
    assert isinstance(T5EntityExtractor("egmt-test/tiny-flan-t5", max_new_tokens=4).raw("a man"), str)
    assert isinstance(Blip2Captioner("egmt-test/tiny-blip2", max_new_tokens=3).caption(_images()[1]), str)


@pytest.mark.parametrize("build", [
    lambda: Blip2Captioner("Salesforce/blip2-opt-2.7b"),
    lambda: T5EntityExtractor("google/flan-t5-large"),
    lambda: get_text_encoder("openai/clip-vit-large-patch14"),
])
def test_missing_model_id_gives_a_clear_error(build, tmp_path: Path,  # noqa: ANN001
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty_hub"))
    with pytest.raises(ModelNotFoundError) as err:
        build()
    msg = str(err.value)
    assert str(tmp_path / "empty_hub") in msg  # the cache that was searched
    assert "huggingface-cli download" in msg and "--local-dir" in msg  # how to provide it
    assert any(i in msg for i in ("Salesforce/blip2-opt-2.7b", "google/flan-t5-large",
                                  "openai/clip-vit-large-patch14"))


def test_missing_path_and_incomplete_folder(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match="No such file or folder"):
        T5EntityExtractor(str(tmp_path / "nowhere" / "flan"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelNotFoundError, match="lacks config.json"):
        Blip2Captioner(str(tmp_path / "empty"))


# ------------------------------------------------------------------ text encoders
def test_open_clip_folder_and_file_load_the_saved_weights(models: dict[str, Path]) -> None:
    ref = np.load(models["oc_ref"])
    enc = get_text_encoder(str(models["oc"]))
    assert isinstance(enc, ClipTextEncoder) and enc.backend == "open_clip" and enc.dim == 48
    feats = enc.encode(["person", "car", "tree"])
    assert feats.shape == (3, 48) and feats.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(feats, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(feats, ref, atol=1e-5)
    by_file = get_text_encoder("egmt-tiny-clip", pretrained=str(models["oc_file"]))
    np.testing.assert_allclose(by_file.encode(["person", "car", "tree"]), ref, atol=1e-5)


def test_clip_needs_weights_unless_random_is_requested(models: dict[str, Path]) -> None:
    with pytest.raises(ModelNotFoundError, match="pretrained weights"):
        ClipTextEncoder("egmt-tiny-clip")
    with pytest.raises(ModelNotFoundError, match="pretrained weights"):
        get_text_encoder("clip")
    rnd = ClipTextEncoder("egmt-tiny-clip", allow_random=True)
    assert rnd.id.endswith("random-init") and rnd.encode(["person"]).shape == (1, 48)
    assert not np.allclose(rnd.encode(["person"]), np.load(models["oc_ref"])[:1], atol=1e-3)


def test_transformers_clip_folder(models: dict[str, Path]) -> None:
    enc = get_text_encoder(str(models["hf_clip"]))
    assert enc.backend == "transformers" and enc.dim == 40
    feats = enc.encode(["person", "car", "a dog on the street"])
    assert feats.shape == (3, 40)
    np.testing.assert_allclose(np.linalg.norm(feats, axis=1), 1.0, atol=1e-5)
    assert not np.allclose(feats[0], feats[1])


def test_feature_cache_keyed_by_encoder_and_label(models: dict[str, Path]) -> None:
    cache = TextFeatureCache(max_items=3)
    enc = ClipTextEncoder(pretrained=str(models["oc"]), cache=cache)
    first = enc.encode(["person", "car", "person"])
    assert (cache.hits, cache.misses, len(cache)) == (0, 3, 2)
    again = enc.encode(["car", "person"])
    assert cache.hits == 2 and np.array_equal(again, first[[1, 0]])
    other = ClipTextEncoder("egmt-tiny-clip", allow_random=True, cache=cache)
    other.encode(["person"])  # another encoder id: a miss, not the first encoder's feature
    assert cache.misses == 4 and cache.get(other.id, "person") is not None
    enc.encode(["tree", "dog"])  # capacity 3: the least recently used entries go
    assert len(cache) == 3
    assert enc.encode([]).shape == (0, 48)
    assert SHARED_CACHE is not cache


def test_minilm_real_weights_rank_similar_words() -> None:
    enc = get_text_encoder("minilm")
    assert enc.id == "sentence-transformers/all-MiniLM-L6-v2" and enc.dim == 384
    f = enc.encode(["car", "automobile", "tree", "person", "pedestrian", "building"])
    assert f.shape == (6, 384)
    np.testing.assert_allclose(np.linalg.norm(f, axis=1), 1.0, atol=1e-4)
    car, auto, tree, person, ped, building = f
    assert car @ auto > car @ tree + 0.2
    assert person @ ped > person @ building + 0.1


def test_annotate_cli_caption_source(models: dict[str, Path], data_root: Path, tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    from egmt_ros.cli.annotate import main

    out = tmp_path / "cap.json"
    assert main(["--data", str(data_root / "msrs_train5"), "--out", str(out), "--source", "caption",
                 "--captioner", str(models["blip2_t5"]), "--extractor", str(models["t5"]), "--max-new-tokens", "6",
                 "--num-beams", "1", "--max-pairs", "1"]) == 0
    err = capsys.readouterr().err
    rec = json.loads(out.read_text())["records"][0]
    assert rec["name"] == "00001D"
    assert isinstance(rec["captions"]["ir"], str) and isinstance(rec["captions"]["vi"], str)
    assert all(e["source"] == "caption" and e["score"] == 1.0 for e in rec["entities"])
    assert len(rec["entities"]) <= 8
    stages = {line.split()[0] for line in err.splitlines() if line.split()}
    assert {"caption", "extract"} <= stages
