"""spectral_lab.views: which parameters are matrices, their 2-D views, splits and layer
selection."""

import pytest
import torch
from torch import nn

from spectral_lab.views import find_matrices, matrix_view, split_gates, split_heads


def test_linear_conv_and_transposed_conv_views():
    lin, conv, tconv = nn.Linear(5, 3), nn.Conv2d(4, 6, 3), nn.ConvTranspose2d(4, 6, 3)
    assert matrix_view("weight", lin.weight, lin).shape == (3, 5)
    assert matrix_view("weight", conv.weight, conv).shape == (6, 4 * 9)  # (c_out, c_in * kh * kw)
    W = matrix_view("weight", tconv.weight, tconv)  # stored (c_in, c_out, kh, kw)
    assert W.shape == (6, 4 * 9)
    torch.testing.assert_close(W[2].reshape(4, 3, 3), tconv.weight[:, 2])
    conv1d = nn.Conv1d(2, 7, 5)
    assert matrix_view("weight", conv1d.weight, conv1d).shape == (7, 10)


def test_biases_norms_are_excluded_and_embeddings_kept():
    ln, bn, emb, lin = nn.LayerNorm(8), nn.BatchNorm1d(8), nn.Embedding(50, 8), nn.Linear(8, 8)
    assert matrix_view("bias", lin.bias, lin) is None
    assert matrix_view("weight", ln.weight, ln) is None
    assert matrix_view("weight", bn.weight, bn) is None
    assert matrix_view("weight", emb.weight, emb).shape == (50, 8)
    mha = nn.MultiheadAttention(8, 2, add_bias_kv=True)
    assert matrix_view("bias_k", mha.bias_k, mha) is None  # (1, 1, d): a bias, not a matrix


def test_attention_split_per_head_reassembles():
    mha = nn.MultiheadAttention(12, 3)
    blocks = matrix_view("in_proj_weight", mha.in_proj_weight, mha, split=True)
    assert set(blocks) == {"q", "k", "v"} and blocks["q"].shape == (3, 4, 12)
    whole = torch.cat([blocks[r].reshape(12, 12) for r in "qkv"])
    torch.testing.assert_close(whole, mha.in_proj_weight)
    # head h of Q is rows [4h, 4h + 4) of the Q block
    torch.testing.assert_close(blocks["q"][1], mha.in_proj_weight[4:8])
    torch.testing.assert_close(blocks["k"][2], mha.in_proj_weight[12 + 8 : 12 + 12])


def test_lstm_and_gru_gate_splits_reassemble():
    lstm, gru = nn.LSTM(5, 7), nn.GRU(5, 7)
    gates = matrix_view("weight_hh_l0", lstm.weight_hh_l0, lstm, split=True)
    assert list(gates) == list("ifgo") and gates["f"].shape == (7, 7)
    torch.testing.assert_close(torch.cat(list(gates.values())), lstm.weight_hh_l0)
    g = matrix_view("weight_ih_l0", gru.weight_ih_l0, gru, split=True)
    assert list(g) == list("rzn") and g["n"].shape == (7, 5)


def test_split_errors_are_explained():
    lin = nn.Linear(4, 4)
    with pytest.raises(ValueError, match="no block structure"):
        matrix_view("weight", lin.weight, lin, split=True)
    with pytest.raises(ValueError, match="must divide"):
        split_heads(torch.randn(12, 4), 3)
    with pytest.raises(ValueError, match="gates"):
        split_gates(torch.randn(10, 3), "ifgo")


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(11, 8)
        self.attn = nn.MultiheadAttention(8, 2)
        self.norm = nn.LayerNorm(8)
        self.lstm = nn.LSTM(8, 8)
        self.head = nn.Linear(8, 11)
        self.head.weight = self.embed.weight  # tied: listed once


def test_find_matrices_names_and_order():
    refs = find_matrices(Block())
    names = [r.name for r in refs]
    assert names == [
        "embed",
        "attn.in_proj_weight",
        "attn.out_proj",
        "lstm.weight_ih_l0",
        "lstm.weight_hh_l0",
    ]
    assert dict((r.name, r.shape) for r in refs)["lstm.weight_ih_l0"] == (32, 8)


def test_layer_selection_by_pattern_list_module_and_predicate():
    model = Block()
    assert [r.name for r in find_matrices(model, "attn*")] == [
        "attn.in_proj_weight",
        "attn.out_proj",
    ]
    assert [r.name for r in find_matrices(model, ["lstm"])] == [
        "lstm.weight_ih_l0",
        "lstm.weight_hh_l0",
    ]
    assert [r.name for r in find_matrices(model, ["embed", "attn.out_proj"])] == [
        "embed",
        "attn.out_proj",
    ]
    square = find_matrices(model, lambda name, p: p.shape[0] == p.shape[1])
    assert [r.name for r in square] == ["attn.out_proj"]


def test_unknown_layer_and_empty_model_raise():
    with pytest.raises(ValueError, match="unknown layer 'decoder'.*available: embed"):
        find_matrices(Block(), ["decoder"])
    with pytest.raises(ValueError, match="no weight matrix matches"):
        find_matrices(Block(), "conv*")
    with pytest.raises(ValueError, match="no weight matrices"):
        find_matrices(nn.Sequential(nn.LayerNorm(4), nn.ReLU()))
    with pytest.raises(TypeError, match="torch.nn.Module"):
        find_matrices(torch.randn(3, 3))
