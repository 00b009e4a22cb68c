"""LORS from a trained stack: initialise LORST / LORSA from dense layers.

A trained unshared stack (AdaMixer's per-stage linears and generators, or
any stack that :class:`~.share.SharedLayers` shares) is turned into its LORS
form without training from scratch, as Relaxed Recursive Transformers (Bae
et al., ICLR 2025) do for language models: the shared part from the mean of
the layers, each layer's private part from a low-rank fit of its residual,
then a short fine-tune.

LORST (:func:`lorst_from_dense`), layers ``W_i`` (out, in), biases ``b_i``:

* ``W_shared = mean_i W_i``. Without the rank limit this is the
  least-squares optimum of ``sum_i ||W_i - W_shared - D_i||_F`` over
  ``W_shared`` for any fixed ``D_i`` summing to zero, and every choice gives
  the same stack (the ``D_i`` absorb it); with rank-limited ``D_i`` the joint
  optimum has no closed form and the mean is the standard choice (it makes
  the residuals ``W_i - mean`` as small as possible in total).
* ``W_i - W_shared ~ B_i A_i`` by truncated SVD at rank ``K_i r_i``
  (Eckart-Young: the best rank-``K_i r_i`` approximation), split into the K
  groups of r consecutive singular triplets, with ``B = U S^1/2``,
  ``A = S^1/2 V^T`` (balanced factors for the fine-tune).
* ``private_bias[i] = b_i`` exactly.

LORSA (:func:`lorsa_from_dense`), dense generators ``Linear(C, G sum_j m_j
n_j)`` per layer: the weight and bias of one layer, group g and matrix kind
j form a tensor ``T`` (m_j, n_j, C + 1) (bias as the last column, since the
cores ``Z(q) = W_z q + b_z`` are affine). With the shared generator the mean
of the dense ones, the residual tensor is fitted by K Tucker-2 terms
``sum_k L_k Z_k R_k`` (:func:`tucker2_fit`):

* L and R from the leading singular vectors of the mode-1 (m, n (C+1)) and
  mode-2 (n, m (C+1)) unfoldings (HOSVD). For the K terms two starts are
  tried and the better kept: (a) the HOSVD bases cut into blocks of r
  columns, the K (L-block, R-block) pairs holding the most energy; the
  pairs span orthogonal subspaces, so this is an orthogonal projection and
  exact as soon as the K pairs cover every block (K >= ceil(m / r)
  ceil(n / r)); (b) successive deflation, term k the rank-(r, r) HOSVD of
  what terms 1..k-1 left: no exactness guarantee, but on trained AdaMixer
  generators it keeps clearly more energy for K > 1 (docs/from_dense.md).
  For K = 1 both are plain HOSVD at rank (r, r);
* the cores by least squares for those L, R (the normal equations of the K
  terms; for K = 1 the projection ``L^T T R^T``);
* optionally ``refine_steps`` sweeps of HOOI-style alternation, term by
  term: with the other terms fixed, L_k and R_k become the leading singular
  vectors of the what-is-left tensor projected on the other factor (every
  update an exact block minimisation, so the error never increases), the
  cores refitted jointly after each sweep; the core generator's weight and
  bias are the cores of the C + 1 columns.

Everything is computed in float64 and written into the stacks in their own
dtype. Each function returns one :class:`LayerFit` per layer.
"""
import math
from dataclasses import dataclass
from typing import List, Sequence, Tuple

import torch

from .lorsa import LORSAGenerator
from .lorst import LORSTLinear

__all__ = [
    'LayerFit', 'FromDenseError', 'lorst_from_dense', 'lorsa_from_dense',
    'tucker2_fit', 'lorst_energy', 'lorst_rank_for_energy',
    'lorsa_rank_for_energy', 'max_rank'
]


class FromDenseError(ValueError):
    """The dense layers cannot be converted into the given LORS stack."""


@dataclass
class LayerFit:
    """How well layer ``layer`` of a LORS stack reproduces its dense layer.

    ``rel_error``: ``||dense_i - lors_i||_F / ||dense_i||_F`` over weight and
    bias; ``energy_kept``: ``1 - ||D_i - D^_i||^2 / ||D_i||^2`` of the
    residual ``D_i = dense_i - shared`` (1.0 for a zero residual; for LORST
    the fraction of squared singular values kept).
    """
    layer: int
    rank: int
    num_factors: int
    rel_error: float
    energy_kept: float


def _fit(layer, rank, k, dense_sq, err_sq, resid_sq) -> LayerFit:
    rel = math.sqrt(err_sq / dense_sq) if dense_sq > 0 else math.sqrt(err_sq)
    kept = 1.0 - err_sq / resid_sq if resid_sq > 0 else 1.0
    return LayerFit(layer, rank, k, rel, max(0.0, min(1.0, kept)))


def _check_layers(name: str, num_layers: int, weights, biases,
                  shape: Tuple[int, int]) -> None:
    if len(weights) != num_layers or len(biases) != num_layers:
        raise FromDenseError(
            f'{name}: {len(weights)} dense layers for a LORS stack of '
            f'{num_layers} layers')
    for i, (w, b) in enumerate(zip(weights, biases)):
        if tuple(w.shape) != shape or tuple(b.shape) != shape[:1]:
            raise FromDenseError(
                f'{name}: dense layer {i} is weight {tuple(w.shape)}, bias '
                f'{tuple(b.shape)}; the LORS stack expects weight {shape}, '
                f'bias {shape[:1]}')


def _stacked(weights, biases):
    W = torch.stack([w.detach().double().cpu() for w in weights])
    b = torch.stack([x.detach().double().cpu() for x in biases])
    return W, b


def max_rank(stack) -> int:
    """The largest ``rank`` the stack's matrices allow: ``min(out, in) //
    max_i K_i`` for LORST (the K_i r of a layer must fit), ``min_j
    min(m_j, n_j)`` for LORSA (a core is r x r)."""
    if isinstance(stack, LORSTLinear):
        k = max(stack.num_factors)
        return min(stack.in_features, stack.out_features) // k
    return min(min(m, n) for m, n in stack.matrix_shapes)


# ---------------------------------------------------------------------------
# LORST
# ---------------------------------------------------------------------------
def _lorst_residuals(stack: LORSTLinear, weights, biases, name):
    _check_layers(name, stack.num_layers, weights, biases,
                  (stack.out_features, stack.in_features))
    W, b = _stacked(weights, biases)  # (N, out, in), (N, out)
    shared = W.mean(0) if stack.shared_weight is not None else \
        torch.zeros_like(W[0])
    return W, b, shared, W - shared


def lorst_energy(stack: LORSTLinear,
                 weights: Sequence[torch.Tensor],
                 biases: Sequence[torch.Tensor],
                 name: str = 'lorst') -> List[torch.Tensor]:
    """Per layer, the cumulative energy of the residual's singular values:
    ``out[i][t]`` is the fraction kept at rank t + 1 (float64)."""
    _, _, _, D = _lorst_residuals(stack, weights, biases, name)
    out = []
    for d in D:
        s2 = torch.linalg.svdvals(d)**2
        total = s2.sum()
        out.append(s2.cumsum(0) / total if total > 0 else torch.ones_like(s2))
    return out


@torch.no_grad()
def lorst_from_dense(stack: LORSTLinear,
                     weights: Sequence[torch.Tensor],
                     biases: Sequence[torch.Tensor],
                     name: str = 'lorst') -> List[LayerFit]:
    """Write ``stack``'s parameters from N dense layers (see the module
    docstring) and report the fit per layer.

    Args:
        stack (LORSTLinear): the target; its ``ranks``/``num_factors`` set
            the rank ``K_i r_i`` of each layer's residual.
        weights (list[Tensor]): N tensors (out, in).
        biases (list[Tensor]): N tensors (out).
        name (str): the stack's name in error messages.

    Raises:
        FromDenseError: layer count or shapes differ, or a layer's
            ``K_i r_i`` exceeds ``min(out, in)``.
    """
    W, b, shared, D = _lorst_residuals(stack, weights, biases, name)
    full = min(stack.in_features, stack.out_features)
    fits = []
    if stack.shared_weight is not None:
        stack.shared_weight.copy_(shared)
    for i, (A, B, bias) in enumerate(
            zip(stack.private_A, stack.private_B, stack.private_bias)):
        width = A.shape[0]  # K_i r_i (0: shared-only ablation)
        if width > full:
            raise FromDenseError(
                f'{name}: layer {i} has rank x num_factors = {width}, more '
                f'than its residual (out={stack.out_features} x in='
                f'{stack.in_features}) allows; expected <= {full}')
        bias.copy_(b[i])
        approx = torch.zeros_like(D[i])
        if width:
            U, S, Vh = torch.linalg.svd(D[i], full_matrices=False)
            root = S[:width].sqrt()
            B.copy_(U[:, :width] * root)
            A.copy_(root[:, None] * Vh[:width])
            approx = (U[:, :width] * S[:width]) @ Vh[:width]
        dense_sq = float((W[i]**2).sum() + (b[i]**2).sum())
        err_sq = float(((D[i] - approx)**2).sum())
        k = stack.num_factors[i] if width else 0
        fits.append(
            _fit(i, stack.ranks[i], k, dense_sq, err_sq, float(
                (D[i]**2).sum())))
    return fits


def lorst_rank_for_energy(stack: LORSTLinear,
                          weights,
                          biases,
                          energy: float,
                          name: str = 'lorst') -> int:
    """The smallest rank r (one for all layers, with the stack's K_i) at
    which every layer keeps at least ``energy`` of its residual.

    Raises:
        FromDenseError: no allowed rank reaches it.
    """
    curves = lorst_energy(stack, weights, biases, name)
    top = max_rank(stack)
    for r in range(1, top + 1):
        if all(
                float(c[min(k * r, len(c)) - 1]) >= energy - 1e-12
                for c, k in zip(curves, stack.num_factors)):
            return r
    best = min(
        float(c[min(k * top, len(c)) - 1])
        for c, k in zip(curves, stack.num_factors))
    raise FromDenseError(
        f'{name}: no rank reaches energy {energy} in every layer; the '
        f'largest allowed rank ({top}) keeps {best:.4f} in the worst layer')


# ---------------------------------------------------------------------------
# LORSA
# ---------------------------------------------------------------------------
def _blocks(U: torch.Tensor, rank: int) -> torch.Tensor:
    """Columns of U cut into blocks of ``rank``, the last zero-padded:
    (num_blocks, rows, rank)."""
    rows, cols = U.shape
    nb = -(-cols // rank)
    padded = U.new_zeros(rows, nb * rank)
    padded[:, :cols] = U
    return padded.view(rows, nb, rank).transpose(0, 1)


def _leading(mat: torch.Tensor, rank: int) -> torch.Tensor:
    """The ``rank`` leading left singular vectors of ``mat``, zero-padded to
    ``rank`` columns if ``mat`` has fewer rows."""
    U = torch.linalg.svd(mat, full_matrices=False)[0][:, :rank]
    if U.shape[1] < rank:
        U = torch.cat([U, U.new_zeros(U.shape[0], rank - U.shape[1])], 1)
    return U


def _joint_cores(T, L, R):
    """Least-squares cores for fixed factors: min over Z of ``sum_c ||T_c -
    sum_k L_k Z_kc R_k||^2``. T (m, n, P), L (K, m, r), R (K, r, n) ->
    Z (K, r, r, P). Normal equations ``kron(L_k^T L_l, R_k R_l^T)``,
    solved by pseudo-inverse (duplicate or zero factors are fine)."""
    K, _, r = L.shape
    LL = torch.einsum('kma,lmb->klab', L, L)  # (K, K, r, r)
    RR = torch.einsum('kan,lbn->klab', R, R)
    gram = torch.einsum('klac,klbd->kablcd', LL,
                        RR).reshape(K * r * r, K * r * r)
    rhs = torch.einsum('kma,mnp,kbn->kabp', L, T, R).reshape(K * r * r, -1)
    return (torch.linalg.pinv(gram, hermitian=True) @ rhs).view(K, r, r, -1)


def _approx(L, Z, R):
    return torch.einsum('kma,kabp,kbn->mnp', L, Z, R)


def _block_init(T, rank, num_factors):
    """HOSVD blocks: the K (L-block, R-block) pairs with the most energy."""
    m, n, P = T.shape
    U = torch.linalg.svd(T.reshape(m, n * P), full_matrices=False)[0]
    V = torch.linalg.svd(
        T.permute(1, 0, 2).reshape(n, m * P), full_matrices=False)[0]
    UB, VB = _blocks(U, rank), _blocks(V, rank)  # (a, m, r), (b, n, r)
    core = torch.einsum('ima,mnp,jnb->ijabp', UB, T, VB)
    energy = (core**2).sum((2, 3, 4)).flatten()  # (a * b)
    order = torch.argsort(energy, descending=True, stable=True).tolist()
    # more terms than blocks: repeat the leading pairs (the joint fit
    # shares their cores), so every term stays trainable
    picks = [order[t % len(order)] for t in range(num_factors)]
    nb = VB.shape[0]
    return (torch.stack([UB[p // nb] for p in picks]),
            torch.stack([VB[p % nb].t() for p in picks]))


def _deflation_init(T, rank, num_factors):
    """Term k: rank-(r, r) HOSVD of what terms 1..k-1 left."""
    m, n, _ = T.shape
    rest, Ls, Rs = T, [], []
    for _ in range(num_factors):
        L = _leading(rest.reshape(m, -1), rank)
        R = _leading(rest.permute(1, 0, 2).reshape(n, -1), rank).t()
        Z = torch.einsum('ma,mnp,bn->abp', L, rest, R)  # projection
        rest = rest - torch.einsum('ma,abp,bn->mnp', L, Z, R)
        Ls.append(L)
        Rs.append(R)
    return torch.stack(Ls), torch.stack(Rs)


def _sq_error(T, L, Z, R) -> float:
    return float(((T - _approx(L, Z, R))**2).sum())


def tucker2_fit(T: torch.Tensor,
                rank: int,
                num_factors: int,
                refine_steps: int = 0
                ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """K Tucker-2 terms ``T[:, :, p] ~ sum_k L_k Z_k[:, :, p] R_k``.

    Two starts, each with least-squares cores, the better one kept: the
    HOSVD blocks (exact once the K pairs cover every block) and successive
    deflation (term k fitted to what the others left: lower errors in
    practice for K > 1, docs/from_dense.md); then ``refine_steps`` HOOI
    sweeps (each update an exact block minimisation: never worse).

    Args:
        T (Tensor): (m, n, P), float64.
        rank (int): r <= min(m, n).
        num_factors (int): K >= 1.
        refine_steps (int): HOOI-style sweeps after the start.

    Returns:
        tuple: L (K, m, r), Z (K, r, r, P), R (K, r, n).
    """
    m, n, P = T.shape
    best = None
    for init in (_block_init, _deflation_init):
        L, R = init(T, rank, num_factors)
        Z = _joint_cores(T, L, R)
        err = _sq_error(T, L, Z, R)
        if best is None or err < best[0]:
            best = (err, L, Z, R)
        if num_factors == 1:  # the two starts are the same
            break
    _, L, Z, R = best
    for _ in range(refine_steps):
        for k in range(num_factors):
            rest = T - _approx(L, Z, R) + _approx(L[k:k + 1], Z[k:k + 1],
                                                  R[k:k + 1])
            # L_k: leading left vectors of rest x_2 R_k, unfolded (m, r P)
            L[k] = _leading(
                torch.einsum('mnp,an->map', rest, R[k]).reshape(m, -1), rank)
            # R_k: leading vectors of L_k^T rest, mode-2 unfolded (n, r P)
            R[k] = _leading(
                torch.einsum('ma,mnp->nap', L[k], rest).reshape(n, -1),
                rank).t()
            Z[k] = torch.einsum('ma,mnp,bn->abp', L[k], rest, R[k])
        Z = _joint_cores(T, L, R)
    return L, Z, R


def _lorsa_residuals(stack: LORSAGenerator, weights, biases, name):
    size = stack.num_groups * sum(m * n for m, n in stack.matrix_shapes)
    _check_layers(name, stack.num_layers, weights, biases,
                  (size, stack.query_dim))
    W, b = _stacked(weights, biases)
    dense = torch.cat([W, b[..., None]], dim=2)  # (N, G S, C + 1)
    shared = dense.mean(0) if stack.shared_generator is not None else \
        torch.zeros_like(dense[0])
    return dense, shared, dense - shared


def _kind_slices(stack: LORSAGenerator):
    """(j, g, m, n, rows of the group-major output layout)."""
    size = sum(m * n for m, n in stack.matrix_shapes)
    for g in range(stack.num_groups):
        start = g * size
        for j, (m, n) in enumerate(stack.matrix_shapes):
            yield j, g, m, n, slice(start, start + m * n)
            start += m * n


@torch.no_grad()
def lorsa_from_dense(stack: LORSAGenerator,
                     weights: Sequence[torch.Tensor],
                     biases: Sequence[torch.Tensor],
                     refine_steps: int = 0,
                     name: str = 'lorsa') -> List[LayerFit]:
    """Write ``stack``'s parameters from N dense generators (see the module
    docstring) and report the fit per layer.

    Args:
        stack (LORSAGenerator): the target (its rank r and K_i are used).
        weights (list[Tensor]): N tensors (G * sum_j m_j n_j, C), in the
            shared generator's output layout (group-major, then kind, then
            the m_j x n_j matrix row-major).
        biases (list[Tensor]): N tensors (G * sum_j m_j n_j).
        refine_steps (int): HOOI sweeps per term (0: HOSVD blocks only).

    Raises:
        FromDenseError: layer count or shapes differ.
    """
    dense, shared, D = _lorsa_residuals(stack, weights, biases, name)
    if stack.shared_generator is not None:
        stack.shared_generator.weight.copy_(shared[:, :-1])
        stack.shared_generator.bias.copy_(shared[:, -1])
    G, J, r = stack.num_groups, len(stack.matrix_shapes), stack.rank
    fits = []
    for i in range(stack.num_layers):
        K = stack.num_factors[i]
        approx = torch.zeros_like(D[i])
        if K:
            cores = D.new_zeros(J, G, K, r, r, D.shape[2])
            for j, g, m, n, rows in _kind_slices(stack):
                T = D[i, rows].view(m, n, -1)
                L, Z, R = tucker2_fit(T, r, K, refine_steps)
                cores[j, g] = Z
                stack.left_factors[j][i][g * K:(g + 1) * K].copy_(L)
                stack.right_factors[j][i][g * K:(g + 1) * K].copy_(R)
                approx[rows] = _approx(L, Z, R).reshape(m * n, -1)
            cores = cores.reshape(J * G * K * r * r, -1)
            gen = stack.private_generators[i]
            gen.weight.copy_(cores[:, :-1])
            gen.bias.copy_(cores[:, -1])
        fits.append(
            _fit(i, r, K, float((dense[i]**2).sum()),
                 float(((D[i] - approx)**2).sum()), float((D[i]**2).sum())))
    return fits


def lorsa_rank_for_energy(stack_factory,
                          weights,
                          biases,
                          energy: float,
                          top: int,
                          name: str = 'lorsa',
                          refine_steps: int = 0) -> Tuple[int, list]:
    """The smallest rank r (the stack's K_i) at which every layer keeps at
    least ``energy`` of its residual, by bisection over 1..``top``.

    ``stack_factory(r)`` builds the LORSA stack at rank r (float64 on the
    CPU is fine). Bisection assumes the energy kept grows with r, true for
    K = 1 (nested HOSVD subspaces) and checked on the shipped configs for
    K > 1; the returned rank is verified to reach ``energy``.

    Returns:
        tuple: (rank, the :class:`LayerFit` list at that rank).

    Raises:
        FromDenseError: even ``top`` does not reach it.
    """

    def fits(r):
        return lorsa_from_dense(
            stack_factory(r), weights, biases, refine_steps, name)

    def ok(f):
        return all(x.energy_kept >= energy - 1e-12 for x in f)

    best = fits(top)
    if not ok(best):
        worst = min(x.energy_kept for x in best)
        raise FromDenseError(
            f'{name}: no rank reaches energy {energy} in every layer; the '
            f'largest allowed rank ({top}) keeps {worst:.4f} in the worst '
            'layer')
    lo, hi, found = 1, top, best
    while lo < hi:
        mid = (lo + hi) // 2
        f = fits(mid)
        if ok(f):
            hi, found = mid, f
        else:
            lo = mid + 1
    return hi, found
