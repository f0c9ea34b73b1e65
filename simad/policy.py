"""Policies evaluated inside the fused rollout kernel: a small multilayer perceptron.

With ``policy=`` a rollout applies, at every step,

    u_t = k_t + s * out(W_L h_{L-1} + b_L),   h_l = tanh(W_l h_{l-1} + b_l),   h_0 = o(x_t)

where k_t are the (optional) feedforward controls, s the per-actuator ``output_scale`` and out
tanh (``squash=True``, the default: |u - k| <= s, no dead gradient at a control clamp) or the
identity. The observation o(x) walks the bodies in order:

    revolute joint: (cos q, sin q) with ``observation="trig"`` (default; periodic, so a pendulum
                    at q and q + 2 pi looks the same), q with ``observation="raw"``;
    prismatic joint: q;     free joint: position (3, m) and the unit quaternion (4, w first);

followed by every velocity qd (nv), each multiplied by ``obs_scale`` (default 1). The weights
are one flat vector, layer by layer W_l (n_out, n_in) row-major then b_l (n_out,). The rollout
kernel evaluates the network per env and per step (no extra launch), and the reverse kernel
pulls the control cotangent back through it by hand-written code into the weights (summed
over the envs, ``Gradients.policy``) and into the state (so the gradient w.r.t. the initial
state and the physical parameters sees the closed loop).
"""

import numpy as np
import taichi as ti

from .adjoint import normalize_vjp, q4
from .errors import InputError
from .kinematics import _FREE, _PRI, _REV
from .model.model import JointType, Model

OBSERVATIONS = ("trig", "raw")
MAX_WIDTH = 1024  # neurons per layer
MAX_LAYERS = 8  # hidden layers
MAX_PARAMS = 1 << 22  # weights of one policy


def observation_size(model: Model, observation: str = "trig") -> int:
    """Length of o(x) for ``model``: see the module doc."""
    n = model.nv
    for i in range(1, model.nbody):
        j = model.body_jnt[i]
        if j < 0:
            continue
        jt = model.jnt_type[j]
        if jt == JointType.REVOLUTE:
            n += 2 if observation == "trig" else 1
        elif jt == JointType.PRISMATIC:
            n += 1
        elif jt == JointType.FREE:
            n += 7
    return n


def _int_tuple(x, name) -> tuple:
    try:
        t = tuple(int(v) for v in x)
    except (TypeError, ValueError):
        raise InputError(name, f"expected a sequence of layer widths, got {x!r}") from None
    if len(t) > MAX_LAYERS or any(v < 1 or v > MAX_WIDTH for v in t):
        raise InputError(name, f"expected at most {MAX_LAYERS} widths in [1, {MAX_WIDTH}], got {t}")
    return t


class MLPPolicy:
    """A tanh MLP policy for ``simad.rollout``, ``rollout_vjp`` and ``value_and_grad``.

    Args:
        model: the robot it drives (fixes the observation size and nu).
        hidden: widths of the hidden layers, e.g. (32, 32); () gives a linear policy.
        observation: "trig" or "raw" (how revolute angles are observed, see the module doc).
        obs_scale: scalar or (nobs,) factor on the observation (e.g. 0.1 on fast velocities).
        output_scale: scalar or (nu,) s; default: the largest absolute bound max(|lo|, |hi|)
            of each limited actuator's control range (the half-range of a symmetric one), 1 for
            unlimited ones.
        squash: tanh on the output layer (default) or a linear output.
        weights: (P,) initial weights; default: seeded random (Glorot-uniform hidden layers,
            output layer scaled by 0.01 so the untrained policy is close to zero).
        seed: the random initialisation's seed.

    ``policy.weights`` is the flat parameter vector; ``with_weights(w)`` returns a copy with new
    ones (what a training loop does after each gradient step). ``policy(q, qd)`` evaluates the
    network in numpy (a reference, and for deploying a trained policy without the engine).
    """

    def __init__(self, model: Model, hidden=(32, 32), *, observation: str = "trig", obs_scale=1.0,
                 output_scale=None, squash: bool = True, weights=None, seed: int = 0):
        if not isinstance(model, Model):
            raise InputError("model", f"expected a simad.Model, got {type(model).__name__}")
        if observation not in OBSERVATIONS:
            raise InputError("policy.observation", f"expected one of {OBSERVATIONS}, got {observation!r}")
        if model.nu == 0:
            raise InputError("policy", f"model '{model.name}' has no actuators for a policy to drive")
        self.observation = observation
        self.hidden = _int_tuple(hidden, "policy.hidden")
        self.nobs = observation_size(model, observation)
        self.nu = model.nu
        self.sizes = (self.nobs, *self.hidden, self.nu)
        self.squash = bool(squash)
        self.obs_scale = _vector(obs_scale, self.nobs, "policy.obs_scale")
        if output_scale is None:
            lo, hi = model.actuator_ctrlrange[:, 0], model.actuator_ctrlrange[:, 1]
            half = np.maximum(np.abs(lo), np.abs(hi))
            ok = np.asarray(model.actuator_ctrllimited, bool) & np.isfinite(half) & (half > 0)
            output_scale = np.where(ok, half, 1.0)
        self.output_scale = _vector(output_scale, self.nu, "policy.output_scale")
        self.num_params = sum(o * i + o for i, o in zip(self.sizes[:-1], self.sizes[1:], strict=False))
        if self.num_params > MAX_PARAMS:
            raise InputError("policy.hidden", f"{self.num_params} weights, over the limit of {MAX_PARAMS}")
        self._joints = _joint_walk(model)
        if weights is None:
            weights = self._init(seed)
        self.weights = self._check_weights(weights)

    # -- parameters ------------------------------------------------------------------------
    def _init(self, seed) -> np.ndarray:
        rng = np.random.default_rng(seed)
        parts = []
        for layer, (i, o) in enumerate(zip(self.sizes[:-1], self.sizes[1:], strict=False)):
            lim = np.sqrt(6.0 / (i + o))
            W = rng.uniform(-lim, lim, (o, i))
            if layer == len(self.sizes) - 2:
                W *= 0.01
            parts += [W.ravel(), np.zeros(o)]
        return np.concatenate(parts)

    def _check_weights(self, w) -> np.ndarray:
        try:
            a = np.array(w, dtype=np.float64).ravel()
        except (TypeError, ValueError):
            raise InputError("policy.weights", f"expected {self.num_params} numbers") from None
        if a.shape != (self.num_params,):
            raise InputError("policy.weights", f"expected {self.num_params} weights for layers {self.sizes}, "
                                               f"got {a.size}")
        if not np.all(np.isfinite(a)):
            raise InputError("policy.weights", f"non-finite weight at index {int(np.flatnonzero(~np.isfinite(a))[0])}")
        return a

    def with_weights(self, weights) -> "MLPPolicy":
        """A copy of this policy with other weights (P,)."""
        p = object.__new__(MLPPolicy)
        p.__dict__.update(self.__dict__)
        p.weights = self._check_weights(weights)
        return p

    def layers(self, weights=None):
        """[(W_l, b_l)] views into the flat weights."""
        w = self.weights if weights is None else weights
        out, off = [], 0
        for i, o in zip(self.sizes[:-1], self.sizes[1:], strict=False):
            out.append((w[off : off + o * i].reshape(o, i), w[off + o * i : off + o * i + o]))
            off += o * i + o
        return out

    def check(self, model: Model):
        """Raises InputError unless this policy fits ``model`` (observation size and nu)."""
        if observation_size(model, self.observation) != self.nobs or model.nu != self.nu \
                or _joint_walk(model) != self._joints:
            raise InputError("policy", f"the policy was built for another model (observation {self.nobs}, nu "
                                       f"{self.nu}); model '{model.name}' has observation "
                                       f"{observation_size(model, self.observation)} and nu {model.nu}")

    # -- numpy reference ---------------------------------------------------------------------
    def observe(self, q, qd) -> np.ndarray:
        """o(x) (..., nobs) for q (..., nq), qd (..., nv)."""
        q, qd = np.asarray(q, np.float64), np.asarray(qd, np.float64)
        cols = []
        for jt, qa in self._joints:
            if jt == JointType.REVOLUTE:
                cols += [np.cos(q[..., qa]), np.sin(q[..., qa])] if self.observation == "trig" else [q[..., qa]]
            elif jt == JointType.PRISMATIC:
                cols.append(q[..., qa])
            elif jt == JointType.FREE:
                quat = q[..., qa + 3 : qa + 7]
                quat = quat / np.linalg.norm(quat, axis=-1, keepdims=True)
                cols += [q[..., qa + k] for k in range(3)] + [quat[..., k] for k in range(4)]
        cols += [qd[..., d] for d in range(qd.shape[-1])]
        return np.stack(cols, -1) * self.obs_scale

    def __call__(self, q, qd) -> np.ndarray:
        """pi(x) (..., nu): the policy's control, without the feedforward k_t."""
        h = self.observe(q, qd)
        layers = self.layers()
        for n, (W, b) in enumerate(layers):
            h = h @ W.T + b
            if n < len(layers) - 1 or self.squash:
                h = np.tanh(h)
        return self.output_scale * h

    # -- kernel packing ----------------------------------------------------------------------
    def pack(self, dtype):
        """(pol, theta, H) for the rollout kernels. ``pol`` (1 + L + nu + nobs, 6): row 0 header
        (L, trig, squash, nobs, H, 0); rows 1..L per layer (n_in, n_out, W offset, b offset,
        input offset, output offset) into theta and the per-env activations (H floats); then one
        row per actuator (output scale in column 0) and per observation (scale in column 0)."""
        L = len(self.sizes) - 1
        pol = np.zeros((1 + L + self.nu + self.nobs, 6), dtype)
        H = sum(self.sizes)
        pol[0] = (L, self.observation == "trig", self.squash, self.nobs, H, 0)
        woff, hoff = 0, 0
        for layer, (i, o) in enumerate(zip(self.sizes[:-1], self.sizes[1:], strict=False)):
            pol[1 + layer] = (i, o, woff, woff + o * i, hoff, hoff + i)
            woff += o * i + o
            hoff += i
        pol[1 + L : 1 + L + self.nu, 0] = self.output_scale
        pol[1 + L + self.nu :, 0] = self.obs_scale
        return pol, np.ascontiguousarray(self.weights, dtype=dtype), H

    def __repr__(self) -> str:
        return (f"MLPPolicy(sizes={self.sizes}, observation={self.observation!r}, squash={self.squash}, "
                f"params={self.num_params})")


def _vector(x, n, name) -> np.ndarray:
    try:
        a = np.array(x, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError(name, f"expected a number or ({n},) numbers") from None
    if a.ndim == 0:
        a = np.full(n, float(a))
    if a.shape != (n,):
        raise InputError(name, f"expected a number or shape ({n},), got {a.shape}")
    if not np.all(np.isfinite(a)):
        raise InputError(name, "non-finite value")
    return a


def _joint_walk(model: Model) -> tuple:
    """((joint type, qadr) per body with a non-fixed joint), the order of the observation."""
    out = []
    for i in range(1, model.nbody):
        j = model.body_jnt[i]
        if j >= 0 and model.jnt_type[j] != JointType.FIXED:
            out.append((int(model.jnt_type[j]), int(model.jnt_qadr[j])))
    return tuple(out)


# ---------------------------------------------------------------------------------------------
# Taichi functions (called per env and step by the rollout and reverse kernels)
# ---------------------------------------------------------------------------------------------
@ti.func
def _ints(pol: ti.template(), r):
    return (ti.cast(pol[r, 0], ti.i32), ti.cast(pol[r, 1], ti.i32), ti.cast(pol[r, 2], ti.i32),
            ti.cast(pol[r, 3], ti.i32), ti.cast(pol[r, 4], ti.i32), ti.cast(pol[r, 5], ti.i32))


@ti.func
def policy_env(topo: ti.template(), pol: ti.template(), th: ti.template(), qw: ti.template(), vw: ti.template(),
               uw: ti.template(), hw: ti.template(), b):
    """uw[b] += s * MLP(o(qw[b], vw[b])); keeps every layer's output in hw[b, 0:H]."""
    L, nobs = ti.cast(pol[0, 0], ti.i32), ti.cast(pol[0, 3], ti.i32)
    trig, squash = pol[0, 1] > 0.5, pol[0, 2] > 0.5
    nbody, nv, nu = topo[0, 2], topo[0, 3], uw.shape[1]
    o = 0
    for i in range(1, nbody):
        jt, qa = topo[i, 1], topo[i, 2]
        if jt == _REV:
            if trig:
                hw[b, o] = ti.cos(qw[b, qa])
                hw[b, o + 1] = ti.sin(qw[b, qa])
                o += 2
            else:
                hw[b, o] = qw[b, qa]
                o += 1
        elif jt == _PRI:
            hw[b, o] = qw[b, qa]
            o += 1
        elif jt == _FREE:
            u = q4(qw, b, qa + 3)
            u = u / u.norm()
            for k in ti.static(range(3)):
                hw[b, o + k] = qw[b, qa + k]
            for k in ti.static(range(4)):
                hw[b, o + 3 + k] = u[k]
            o += 7
    for d in range(nv):
        hw[b, o + d] = vw[b, d]
    for k in range(nobs):
        hw[b, k] *= pol[1 + L + nu + k, 0]
    hl = 0
    for layer in range(L):
        nin, nout, wo, bo, hi, ho = _ints(pol, 1 + layer)
        act = layer < L - 1 or squash
        for j in range(nout):
            acc = th[bo + j]
            for k in range(nin):
                acc += th[wo + j * nin + k] * hw[b, hi + k]
            if act:
                acc = ti.tanh(acc)
            hw[b, ho + j] = acc
        hl = ho
    for a in range(nu):
        uw[b, a] += pol[1 + L + a, 0] * hw[b, hl + a]


@ti.func
def policy_vjp(topo: ti.template(), pol: ti.template(), th: ti.template(), qw: ti.template(), hw: ti.template(),
               ub: ti.template(), thb: ti.template(), qb: ti.template(), vb: ti.template(), b):
    """Reverse of ``policy_env`` (whose activations are in hw[b, 0:H]): the control cotangent
    ub[b] -> thb[b] (added) and the state cotangents qb[b], vb[b] (added). hw[b, H:2H] holds
    the activation cotangents."""
    L, nobs, H = ti.cast(pol[0, 0], ti.i32), ti.cast(pol[0, 3], ti.i32), ti.cast(pol[0, 4], ti.i32)
    trig, squash = pol[0, 1] > 0.5, pol[0, 2] > 0.5
    nbody, nv, nu = topo[0, 2], topo[0, 3], ub.shape[1]
    for k in range(H):
        hw[b, H + k] = 0.0
    hl = ti.cast(pol[L, 5], ti.i32)
    for a in range(nu):
        hw[b, H + hl + a] = pol[1 + L + a, 0] * ub[b, a]
    for r in range(L):
        layer = L - 1 - r
        nin, nout, wo, bo, hi, ho = _ints(pol, 1 + layer)
        act = layer < L - 1 or squash
        for j in range(nout):
            zb = hw[b, H + ho + j]
            if act:
                h = hw[b, ho + j]
                zb *= 1.0 - h * h
            thb[b, bo + j] += zb
            for k in range(nin):
                thb[b, wo + j * nin + k] += zb * hw[b, hi + k]
                hw[b, H + hi + k] += th[wo + j * nin + k] * zb
    for k in range(nobs):
        hw[b, H + k] *= pol[1 + L + nu + k, 0]
    o = 0
    for i in range(1, nbody):
        jt, qa = topo[i, 1], topo[i, 2]
        if jt == _REV:
            if trig:
                qb[b, qa] += -ti.sin(qw[b, qa]) * hw[b, H + o] + ti.cos(qw[b, qa]) * hw[b, H + o + 1]
                o += 2
            else:
                qb[b, qa] += hw[b, H + o]
                o += 1
        elif jt == _PRI:
            qb[b, qa] += hw[b, H + o]
            o += 1
        elif jt == _FREE:
            for k in ti.static(range(3)):
                qb[b, qa + k] += hw[b, H + o + k]
            gb = normalize_vjp(q4(qw, b, qa + 3), ti.Vector([hw[b, H + o + 3 + k] for k in ti.static(range(4))]))
            for k in ti.static(range(4)):
                qb[b, qa + 3 + k] += gb[k]
            o += 7
    for d in range(nv):
        vb[b, d] += hw[b, H + o + d]
