"""The proven iterative solver for a Gram matrix's top two eigenvalues, against LAPACK."""

import threading

import numpy as np
import pytest
import scipy.linalg

from expander_sweeps.graphs import scratch, spectral, top_eigen
from expander_sweeps.graphs.spectral import layer_spectrum
from expander_sweeps.graphs.top_eigen import certified_top_two, proven_second_bound


def _gram(mask: np.ndarray) -> np.ndarray:
    small = mask if mask.shape[0] <= mask.shape[1] else mask.T
    return small @ small.T


def _mask(shape, kept, seed, weighted=False):
    rng = np.random.default_rng(seed)
    mask = (rng.random(shape) < kept).astype(float)
    if weighted:
        mask *= np.abs(rng.standard_normal(shape))
    return mask


def _lapack_top(gram, count=2):
    return scipy.linalg.eigvalsh(gram)[::-1][:count]


@pytest.mark.parametrize("shape, kept, weighted", [
    ((512, 512), 0.1, False), ((512, 512), 0.5, False), ((512, 512), 0.02, False),
    ((300, 300), 0.1, True), ((256, 700), 0.05, False), ((400, 330), 0.01, True),
])
def test_both_values_are_proven_and_agree_with_lapack(shape, kept, weighted):
    gram = _gram(_mask(shape, kept, seed=sum(shape), weighted=weighted))
    found = certified_top_two(gram)
    assert found is not None, "the proof failed on an ordinary random mask"
    l1, l2 = _lapack_top(gram)
    assert abs(found[0] - l1) <= 1e-9 * l1
    assert abs(found[1] - l2) <= 1e-9 * l2
    assert found[1] <= l2 * (1 + 1e-14)  # a Ritz value: from below, up to rounding


def test_the_certificate_succeeds_just_above_lambda_2_and_fails_just_below():
    gram = _gram(_mask((300, 300), 0.1, seed=3))
    values, vectors = scipy.linalg.eigh(gram)
    l1, l2, top = values[-1], values[-2], vectors[:, -1]
    bound = proven_second_bound(gram, top, l1, l2 * (1 + 1e-10))
    assert bound is not None and l2 <= bound <= l2 * (1 + 1e-9)
    assert proven_second_bound(gram, top, l1, l2 * (1 - 1e-7)) is None
    # Without deflating lambda_1 the matrix is indefinite there: no proof.
    assert proven_second_bound(gram, top, 0.0, l2 * (1 + 1e-10)) is None
    # A vector far from the top one deflates the wrong direction: no proof either.
    other = np.random.default_rng(0).standard_normal(gram.shape[0])
    assert proven_second_bound(gram, other / np.linalg.norm(other), l1, l2 * (1 + 1e-10)) is None


def test_a_repeated_lambda_1_is_left_to_lapack_and_still_comes_out_right():
    # Two identical components: lambda_1 = lambda_2, which deflation cannot separate.
    block = _mask((256, 256), 0.1, seed=4)
    union = np.kron(np.eye(2), block)
    assert certified_top_two(_gram(union)) is None
    s = layer_spectrum(union)
    assert s.lambda_2 == pytest.approx(s.lambda_1, rel=1e-12)
    assert s.components == 2 and s.largest_component == pytest.approx(0.5)


def test_bad_or_tiny_input_gives_no_answer_rather_than_a_wrong_one():
    gram = _gram(_mask((300, 300), 0.1, seed=5))
    gram[3, 4] = np.nan
    assert certified_top_two(gram) is None
    assert certified_top_two(np.eye(2)) is None
    assert certified_top_two(np.zeros((300, 300))) is None  # lambda_2 = 0: LAPACK and the SVD decide


def test_the_input_is_untouched_and_the_digits_repeat():
    gram = _gram(_mask((300, 300), 0.1, seed=6))
    copy = gram.copy()
    first = certified_top_two(gram)
    assert np.array_equal(gram, copy)
    assert certified_top_two(gram) == first


def test_layers_from_256_vertices_on_a_side_take_the_proven_path(monkeypatch):
    calls = []

    def spy(gram, *args, **kwargs):
        calls.append(gram.shape)
        return top_eigen.certified_top_two(gram, *args, **kwargs)

    monkeypatch.setattr(spectral, "certified_top_two", spy)
    mask = _mask((300, 280), 0.1, seed=7)
    s = layer_spectrum(mask, remove_isolated=False)
    layer_spectrum(_mask((128, 128), 0.1, seed=7), remove_isolated=False)
    assert calls == [(280, 280)]
    values = np.linalg.svd(mask, compute_uv=False)
    assert s.lambda_1 == pytest.approx(values[0], rel=1e-12)
    assert s.lambda_2 == pytest.approx(values[1], rel=1e-10)


def test_scratch_buffers_are_reused_per_name_and_per_thread():
    a = scratch.buffer("test.a", (64, 64), np.float64)
    assert np.shares_memory(a, scratch.buffer("test.a", (32, 32), np.float64))  # smaller: same memory
    assert not np.shares_memory(a, scratch.buffer("test.b", (64, 64), np.float64))
    big = (int(np.sqrt(scratch.LARGEST_KEPT // 8)) + 1,) * 2
    assert not np.shares_memory(scratch.buffer("test.big", big, np.float64),
                                scratch.buffer("test.big", big, np.float64))
    other = []
    thread = threading.Thread(target=lambda: other.append(scratch.buffer("test.a", (64, 64), np.float64)))
    thread.start()
    thread.join()
    assert not np.shares_memory(a, other[0])


@pytest.mark.parametrize("graph", ["connected", "two parts", "long path", "isolated kept"])
def test_components_agree_with_scipy_whichever_way_they_are_found(graph):
    rng = np.random.default_rng(8)
    if graph == "connected":
        b = (rng.random((200, 150)) < 0.05).astype(float)
    elif graph == "two parts":
        b = scipy.linalg.block_diag((rng.random((100, 60)) < 0.2), (rng.random((50, 40)) < 0.3)).astype(float)
    elif graph == "long path":  # a path of 300 vertices: more breadth-first rounds than allowed
        b = np.eye(150) + np.eye(150, k=1)
    else:
        b = (rng.random((60, 50)) < 0.2).astype(float)
        b[5, :] = 0
    b = b[b.any(axis=1)][:, b.any(axis=0)] if graph != "isolated kept" else b
    upper = scipy.sparse.coo_matrix(b)
    rows = b.shape[0]
    adjacency = scipy.sparse.coo_matrix((np.ones(upper.nnz), (upper.row, rows + upper.col)),
                                        shape=(rows + b.shape[1],) * 2)
    count, labels = scipy.sparse.csgraph.connected_components(adjacency, directed=False)
    found = spectral._components(b, isolated=graph == "isolated kept")
    assert found == (count, pytest.approx(np.bincount(labels).max() / (rows + b.shape[1])))


@pytest.mark.parametrize("weighted", [False, True])
def test_layer_spectrum_leaves_the_callers_matrix_alone(weighted):
    # A 0/1 mask is used without a copy (normalising it changes nothing), and the Gram matrix
    # and the solver's matrices live in reused scratch buffers: none of it may write back.
    mask = _mask((300, 260), 0.1, seed=9, weighted=weighted)
    mask[4, :] = 0  # an isolated row, removed on the way
    before = mask.copy()
    first = layer_spectrum(mask)
    assert np.array_equal(mask, before)
    assert layer_spectrum(mask) == first  # the scratch buffers carry nothing between calls


def test_a_lapack_failure_inside_the_solver_falls_back_to_the_dense_one(monkeypatch):
    # Fault injection: the tridiagonal eigensolver refuses to converge, as LAPACK can.
    def refuse(*args, **kwargs):
        raise np.linalg.LinAlgError("dstev did not converge (info 3)")

    monkeypatch.setattr(top_eigen, "_tridiagonal_eigen", refuse)
    mask = _mask((300, 280), 0.1, seed=10)
    assert certified_top_two(_gram(mask)) is None
    s = layer_spectrum(mask, remove_isolated=False)
    values = np.linalg.svd(mask, compute_uv=False)
    assert s.lambda_2 == pytest.approx(values[1], rel=1e-10)


@pytest.mark.parametrize("fortran", [False, True])
@pytest.mark.parametrize("weighted", [False, True])
def test_the_gram_matrix_is_the_lower_triangle_of_the_full_product(fortran, weighted):
    # syrk computes one triangle: half the products of matrix @ matrix.T.
    matrix = _mask((300, 420), 0.1, seed=8, weighted=weighted).astype(np.float64 if weighted else np.float32)
    if fortran:
        matrix = np.asfortranarray(matrix)
    out = np.full((300, 300), 7.0, dtype=matrix.dtype)
    spectral._lower_gram(matrix, out)
    full = matrix.astype(np.float64) @ matrix.T.astype(np.float64)
    lower = np.tril_indices(300)
    if weighted:
        assert np.allclose(out[lower], full[lower], rtol=1e-13, atol=0)
    else:  # edge counts: exact in float32
        assert np.array_equal(out[lower], full[lower])
    assert (out[np.triu_indices(300, 1)] == 0.0).all(), "old numbers above the diagonal must go"


def test_the_solver_reads_the_lower_triangle_only():
    gram = _gram(_mask((400, 400), 0.1, seed=9))
    lower = np.tril(gram)
    assert certified_top_two(lower) == certified_top_two(gram) is not None
    lower[4, 3] = np.nan  # a bad entry where the solver reads
    assert certified_top_two(lower) is None


def test_old_numbers_in_the_reused_buffers_change_no_result():
    mask = _mask((300, 300), 0.1, seed=11)
    first = layer_spectrum(mask)
    layer_spectrum(_mask((600, 600), 0.3, seed=10, weighted=True) * 1e3)  # other numbers in every buffer
    assert layer_spectrum(mask) == first
    values = np.linalg.svd(mask[mask.any(axis=1)][:, mask.any(axis=0)], compute_uv=False)
    assert first.lambda_2 == pytest.approx(values[1], rel=1e-10)
