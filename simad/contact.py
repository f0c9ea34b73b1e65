"""Rigid bodies with contact: free bodies (6-DOF) colliding with each other and with static
geometry, differentiable through impacts.

The scene is an ordinary ``Model``: every moving body hangs from the world by a free joint
(``ModelBuilder.add_body(..., joint="free")`` or MJCF ``<freejoint/>``) and carries collision
geoms (sphere, box, capsule); geoms of the world body (or of bodies welded to it) are static
(plane, sphere, box, capsule). ``q``/``qd`` follow the model's conventions (a free joint's q is
the body origin and its quaternion w-first, qd is (v, w) in the body frame).

Applied inputs: ``controls`` (B, T, nmov, 6) hold per moving body and step a world-frame force
(N, at the centre of mass) and torque (N m), held over the step; ``nmov`` counts the moving
bodies in model order.

One step (dt), all envs in parallel:

1. free motion: v* = v + dt (g + f/m), w* = w + dt I^-1 (tau - w x I w)  (world frame);
2. broad phase (``Contact.broad_phase``, on by default): bounding spheres per geom, grown by
   what the free motion can close in the step plus the activation margin; sweep and prune along
   x (intervals kept sorted across steps by insertion sort) finds the overlapping pairs, and a
   bounding-sphere test per contact slot keeps the candidates (plane pairs: a half-space test
   each). Conservative: every pair it drops is one the narrow phase would have found inactive
   (exactly, for sphere, capsule and plane pairs; box-box pairs whose bounding spheres are apart
   but whose face test alone reports an overlap are dropped, correctly). A discrete choice, not
   differentiated; the backward pass recomputes it per step. Scenes with more than
   ``SWEEP_MAX_GEOMS`` geoms, or rotating faster than 1/4 rad per step, test every pair instead;
3. narrow phase of every candidate pair (contact capacity per pair: plane-sphere 1, plane-capsule 2,
   plane-box 8, sphere-sphere 1, sphere-capsule 1, sphere-box 1, capsule-capsule 1,
   capsule-box 3 (end spheres and the point nearest the box centre), box-box 8 (the face
   normal with the least penetration picks a reference face; the other box's vertices are the
   contacts; edge-edge contacts are not generated));
4. contact impulses, in one of two modes (``Contact.mode``):

   * ``"impulse"`` (exact impulses): a contact is active when it closes within the step
     (gap < max(-v_n dt, slop)). Each active contact targets the normal velocity
     -e v_n^- (restitution e, faded in over approach speeds ``bounce_threshold`` .. 2x so resting
     contacts do not micro-bounce) plus a Baumgarte push-out of penetration beyond ``slop``;
     Coulomb friction |J_t| <= mu J_n in the friction cone (static and kinetic). ``iterations``
     Jacobi sweeps with mass splitting (each contact sees its bodies' masses divided by their
     number of active contacts) solve all contacts at once.
     **Time of impact:** a contact that closes at toi = gap / (-v_n) inside the step moves its
     bodies with the pre-impact velocity until toi and the post-impact velocity after, so
     x' = x + dt v' - toi (v' - v*) per contact. This makes the end state a continuous function
     of the inputs across the step in which an impact happens, which is what makes the
     gradient right (DiffTaichi's billiards showed the naive discrete gradient is wrong). Only a
     contact that closes by its own motion (0 < gap < -v_n dt) has an impact time; one already
     touching, or pushed shut by other contacts (a Newton's cradle), acts from the step's start.
     ``toi=False`` gives the naive scheme, for comparison.
   * ``"smooth"``: a spring-damper along the normal on a softplus of the penetration
     (width ``softness``, see ``Contact``), stiffness set by the contact period ``timeconst`` and the pair's
     effective mass (k = m_eff (2 pi / timeconst)^2, like MuJoCo's solref), damping ratio from
     the restitution (zeta = -ln e / sqrt(pi^2 + ln^2 e), exact for a linear spring-dashpot; the
     force is clamped at zero, so bodies separate a little early and bounce a few % higher:
     apex 0.676 m for e^2 h = 0.64 m);
     friction mu f_n v_t / sqrt(|v_t|^2 + friction_eps^2). Smooth everywhere, so gradients exist
     across contact changes, at the price of soft penetration (~ g timeconst^2 / 4 pi^2) and
     creep under static friction (speed ~ friction_eps x load ratio).

5. positions: x' = x + dt v' (with the toi correction above), q' = normalize(q + dt/2 w' (x) q).

Pair coefficients combine the two geoms' values like Box2D: friction sqrt(mu_a mu_b),
restitution max(e_a, e_b) (the gradient goes to the larger one; on a tie, to geom b's).

Non-smooth points and their gradients: the contact activity test, the friction cone clamp and
the Jacobi clamp J_n >= 0 are piecewise (the gradient is that of the active piece); slip and
normal directions are regularised with 1e-12 so they have no 0/0; the impulse solver's slip
direction only sets the tangential effective mass and below 1e-6 m/s of slip (rolling,
resting) is replaced by a fixed unit tangent, so the derivative stays bounded; a frictionless
pair (mu < 1e-9) has no tangential impulse at all.

The forward rollout is one fused kernel launch; the gradient is that forward (recording the
states) and one more launch for the whole reverse pass, hand-written (``contact_adjoint``: each
step recomputed, then reversed stage by stage, one thread per env). Taichi's reverse mode of the
per-step stage kernels (DESIGN.md section 1 shapes) stays as the tests' reference
(``SOLVER_ADJOINT = "taichi"``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import taichi as ti

from . import contact_adjoint as KA
from . import contact_kernels as K
from . import runtime
from .errors import InputError, ModelError, NonFiniteError
from .kinematics import batch_mode
from .model.model import GeomType, JointType, Model
from .rollout import Trajectory
from .validate import as_array

MODES = {"impulse": 0, "smooth": 1}
# the gradient's reverse pass: "hand" (contact_adjoint.reverse_kernel, one launch; the default) or
# "taichi" (Taichi's reverse mode of the per-step stage kernels, 2-9x slower; the tests' reference)
SOLVER_ADJOINT = "hand"
# contacts per pair, indexed by (type a, type b) with type a <= type b
SWEEP_MAX_GEOMS = 2048  # the broad phase's pair table is ng^2 int32 (16 MiB here); above it, a scan of all pairs
_CAPACITY = {
    (GeomType.PLANE, GeomType.SPHERE): 1, (GeomType.PLANE, GeomType.CAPSULE): 2, (GeomType.PLANE, GeomType.BOX): 8,
    (GeomType.SPHERE, GeomType.SPHERE): 1, (GeomType.SPHERE, GeomType.CAPSULE): 1, (GeomType.SPHERE, GeomType.BOX): 1,
    (GeomType.CAPSULE, GeomType.CAPSULE): 1, (GeomType.CAPSULE, GeomType.BOX): 3, (GeomType.BOX, GeomType.BOX): 8,
}
CONTACT_PARAMS = ("body_mass", "body_inertia", "body_com", "geom_size", "geom_friction", "geom_restitution", "gravity")
MAX_SPEED = 1e6


@dataclass(frozen=True)
class Contact:
    """Contact options of a rollout (see the module docstring for the model).

    Attributes:
        mode: "impulse" (exact impulses with time-of-impact correction) or "smooth" (penalty).
        iterations: Jacobi sweeps of the impulse solver (4, 8 or 16; each value compiles once).
        toi: time-of-impact correction of positions (impulse mode). False: the naive scheme.
        baumgarte: fraction of the penetration beyond ``slop`` pushed out per step (impulse).
        slop: m, penetration allowed without push-out; also the activation margin (impulse).
        bounce_threshold: m/s, approach speed below which restitution is off (ramps to full at 2x).
        timeconst: s, contact period of the smooth spring (>= ~3 dt for stability).
        softness: m, width of the softplus on the penetration (smooth). The softplus pushes
            before contact: a body of weight m g rests at a gap of about
            -softness * ln(exp(g timeconst^2 / (4 pi^2 softness)) - 1), i.e. it hovers (by ~2 mm with
            softness 1e-3 m at the default timeconst) unless softness is below g timeconst^2 / 4 pi^2
            (1e-4 m at 0.02 s). The default 1e-4 m rests 0.05 mm deep.
        friction_eps: m/s, slip-speed regularisation of smooth friction. Stable (rolling, resting)
            when friction_eps > dt mu g (1 + m r^2 / I) / 2: 1e-2 covers dt <= 1 ms for solid spheres
            at mu = 0.5; smaller values creep less but make rolling gradients explode.
        broad_phase: skip, each step, the pairs whose bounding spheres cannot meet within the
            step (a conservative test; results are unchanged except for box-box pairs whose
            face test alone would have reported a contact between boxes that are apart).
            False runs the narrow phase on every pair (for checks).
    """

    mode: str = "impulse"
    iterations: int = 8
    toi: bool = True
    baumgarte: float = 0.2
    slop: float = 1e-4
    bounce_threshold: float = 0.05
    timeconst: float = 0.02
    softness: float = 1e-4
    friction_eps: float = 1e-2
    broad_phase: bool = True

    def validated(self, dt: float) -> Contact:
        f = "contact."
        if self.mode not in MODES:
            raise InputError(f + "mode", f"expected one of {sorted(MODES)}, got {self.mode!r}")
        if self.iterations not in (4, 8, 16):
            raise InputError(f + "iterations", f"expected 4, 8 or 16, got {self.iterations!r}")
        for name, lo in (("baumgarte", 0.0), ("slop", 0.0), ("bounce_threshold", 0.0)):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and np.isfinite(v) and v >= lo):
                raise InputError(f + name, f"must be a finite number >= {lo}, got {v!r}")
        if not isinstance(self.broad_phase, (bool, np.bool_)):
            raise InputError(f + "broad_phase", f"expected True or False, got {self.broad_phase!r}")
        if self.baumgarte > 1.0:
            raise InputError(f + "baumgarte", f"must be in [0, 1], got {self.baumgarte}")
        for name in ("timeconst", "softness", "friction_eps"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and np.isfinite(v) and v > 0):
                raise InputError(f + name, f"must be a finite number > 0, got {v!r}")
        if self.mode == "smooth" and self.timeconst < 2.0 * dt:
            raise InputError(f + "timeconst",
                             f"{self.timeconst} s is below 2 dt = {2 * dt} s: the contact spring would be unstable")
        return self

    @property
    def nit(self) -> int:
        return self.iterations if self.mode == "impulse" else 1

    def cfg(self) -> np.ndarray:
        return np.array([self.timeconst, self.softness, self.friction_eps, self.baumgarte, self.slop,
                         max(self.bounce_threshold, 1e-9), float(bool(self.broad_phase)),
                         float(self.mode == "smooth")])


@dataclass
class GradientQuality:
    """How far a contact gradient can be trusted, per env.

    Attributes:
        mode_switches: (B,) contacts that became active or inactive during the rollout.
        max_growth: (B,) the largest one-step growth factor of the state adjoint's norm.
        max_growth_step: (B,) the step where it happened (-1 when the adjoint stayed zero).
        fd_directional: (B,) central finite-difference derivative of the loss along a random
            unit direction of (q0, qd0, controls), or None if not asked for.
        ad_directional: (B,) the same derivative from the gradient.
        fd_rel_error: (B,) |fd - ad| / max(|fd|, |ad|, 1e-12), or None.
    """

    mode_switches: np.ndarray
    max_growth: np.ndarray
    max_growth_step: np.ndarray
    fd_directional: np.ndarray | None = None
    ad_directional: np.ndarray | None = None
    fd_rel_error: np.ndarray | None = None


# ------------------------------------------------------------------------------------------
# the scene: a Model checked and packed for the contact kernels
# ------------------------------------------------------------------------------------------
@dataclass
class _Scene:
    bodies: np.ndarray  # (nb,) model body ids of the moving bodies
    qadr: np.ndarray
    vadr: np.ndarray
    top: np.ndarray  # int32 layout, see contact_kernels
    geo: np.ndarray  # (ng, 12) static geometry: pos, rot (moving geoms: in the body frame)
    npair: int
    kmax: int
    nslot: int  # contact slots: (pair, k) for every pair and each of its contacts
    groups: tuple  # (type a, type b, first slot, end slot): slots sorted by pair type
    bpt: np.ndarray  # int32 broad-phase table: plane-pair slots, ng (0: no table), first slot per pair, pair per geom pair


def scene(model: Model) -> _Scene:
    """Checks that ``model`` is a free-body scene and packs its topology (cached per model)."""
    return runtime.device_data(model, lambda m, dtype: _build_scene(m), "contact_scene")


def _build_scene(m: Model) -> _Scene:
    if m.nbody < 2:
        raise ModelError("a contact scene needs at least one moving body", element="model", field="bodies")
    moving, welded = [], {0: (np.eye(3), np.zeros(3))}
    for b in range(1, m.nbody):
        j = int(m.body_jnt[b])
        parent = int(m.body_parent[b])
        if j < 0:
            if parent not in welded:
                raise ModelError(f"body '{m.body_names[b]}' is welded to a moving body; contact scenes support "
                                 "free bodies and static geometry only", element=f"body '{m.body_names[b]}'", field="joint")
            Rp, pp = welded[parent]
            welded[b] = (Rp @ m.body_rot[b], pp + Rp @ m.body_pos[b])
            continue
        if m.jnt_type[j] != JointType.FREE or parent != 0:
            raise ModelError(f"joint '{m.jnt_names[j]}' is not a free joint of a child of the world; contact scenes "
                             "support free bodies and static geometry only (articulated models take smooth contact "
                             "through rollout(..., contact=Contact(mode='smooth')))",
                             element=f"body '{m.body_names[b]}'", field="joint")
        if m.body_mass[b] <= 0:
            raise ModelError("a moving body needs a positive mass", element=f"body '{m.body_names[b]}'", field="mass")
        inertia = m.body_inertia[b]
        if not np.all(np.isfinite(inertia)) or np.linalg.eigvalsh(0.5 * (inertia + inertia.T)).min() <= 0:
            raise ModelError("a moving body needs a positive-definite inertia", element=f"body '{m.body_names[b]}'",
                             field="inertia")
        moving.append(b)
    if not moving:
        raise ModelError("a contact scene needs at least one moving (free) body", element="model", field="bodies")
    index = {b: i for i, b in enumerate(moving)}
    ng = m.ngeom
    gtype = np.asarray(m.geom_type, np.int32)
    gbody = np.full(ng, -1, np.int32)
    geo = np.zeros((ng, 12))
    for g in range(ng):
        b = int(m.geom_body[g])
        if b in index:
            if gtype[g] == GeomType.PLANE:
                raise ModelError("a plane must be static (a geom of the world body)", element=f"geom '{m.geom_names[g]}'",
                                 field="type")
            gbody[g] = index[b]
            geo[g, :3], geo[g, 3:] = m.geom_pos[g], m.geom_rot[g].reshape(9)
        else:
            Rp, pp = welded[b]
            geo[g, :3], geo[g, 3:] = pp + Rp @ m.geom_pos[g], (Rp @ m.geom_rot[g]).reshape(9)
    pairs = []
    for a in range(ng):
        for c in range(a + 1, ng):
            if gbody[a] < 0 and gbody[c] < 0 or gbody[a] == gbody[c]:
                continue
            ga, gb = (a, c) if gtype[a] <= gtype[c] else (c, a)
            key = (GeomType(gtype[ga]), GeomType(gtype[gb]))
            if key not in _CAPACITY:
                continue  # plane-plane never collides
            pairs.append((ga, gb, _CAPACITY[key]))
    kmax = max([p[2] for p in pairs], default=1)
    qadr = np.array([m.jnt_qadr[m.body_jnt[b]] for b in moving], np.int32)
    vadr = np.array([m.jnt_vadr[m.body_jnt[b]] for b in moving], np.int32)
    pairs.sort(key=lambda pr: (gtype[pr[0]], gtype[pr[1]]))
    slots = [(p, k) for p, (_, _, kc) in enumerate(pairs) for k in range(kc)]
    groups, start = [], 0
    for key in sorted({(int(gtype[a]), int(gtype[c])) for a, c, _ in pairs}):
        n = sum(kc for a, c, kc in pairs if (gtype[a], gtype[c]) == key)
        groups.append((key[0], key[1], start, start + n))
        start += n
    top = np.concatenate([[ng, len(moving), len(pairs), kmax], np.stack([gtype, gbody], 1).reshape(-1),
                          np.array(pairs, np.int32).reshape(-1), np.stack([qadr, vadr], 1).reshape(-1),
                          np.array(slots, np.int32).reshape(-1)]).astype(np.int32)
    # the broad phase's sweep finds pairs by geom indices: (min, max) -> pair, pair -> first slot
    plane_slots = max([g[3] for g in groups if g[0] == GeomType.PLANE], default=0)
    pstart = np.concatenate([[0], np.cumsum([kc for _, _, kc in pairs])[:-1]]) if pairs else np.zeros(0)
    if ng <= SWEEP_MAX_GEOMS:
        table = np.full((ng, ng), -1, np.int64)
        for p, (a, c, _) in enumerate(pairs):
            table[min(a, c), max(a, c)] = p
        bpt = np.concatenate([[plane_slots, ng], pstart, table.reshape(-1)])
    else:
        bpt = np.concatenate([[plane_slots, 0], pstart])
    return _Scene(np.array(moving, np.int32), qadr, vadr, top, geo, len(pairs), kmax, len(slots),
                  tuple(groups), bpt.astype(np.int32))


def _params(m: Model, sc: _Scene) -> np.ndarray:
    """The differentiable parameter vector: masses, inertias, COMs of the moving bodies, then
    geom sizes, frictions, restitutions, then gravity."""
    b = sc.bodies
    inv = np.linalg.inv(m.body_inertia[b])  # the kernels read it; its gradient is chained in _split_params
    return np.concatenate([m.body_mass[b], m.body_inertia[b].reshape(-1), m.body_com[b].reshape(-1),
                           m.geom_size.reshape(-1), m.geom_friction, m.geom_restitution, m.gravity,
                           inv.reshape(-1)]).astype(np.float64)


def _split_params(m: Model, sc: _Scene, g: np.ndarray, names) -> dict:
    nb, ng = len(sc.bodies), m.ngeom
    o = np.cumsum([0, nb, 9 * nb, 3 * nb, 3 * ng, ng, ng, 3, 9 * nb])
    # d loss / d I += -I^-T (d loss / d I^-1) I^-T
    inv = np.linalg.inv(m.body_inertia[sc.bodies])
    ginv = g[o[7]:o[8]].reshape(nb, 3, 3)
    g = g.copy()
    g[o[1]:o[2]] += (-np.swapaxes(inv, 1, 2) @ ginv @ np.swapaxes(inv, 1, 2)).reshape(-1)
    parts = {
        "body_mass": (g[o[0]:o[1]], (nb,)), "body_inertia": (g[o[1]:o[2]], (nb, 3, 3)), "body_com": (g[o[2]:o[3]], (nb, 3)),
        "geom_size": (g[o[3]:o[4]], (ng, 3)), "geom_friction": (g[o[4]:o[5]], (ng,)),
        "geom_restitution": (g[o[5]:o[6]], (ng,)), "gravity": (g[o[6]:o[7]], (3,)),
    }
    out = {}
    for name in names:
        if name in ("body_mass", "body_inertia", "body_com"):
            full = np.zeros_like(getattr(m, name), dtype=np.float64)
            full[sc.bodies] = parts[name][0].reshape(parts[name][1])
            if name == "body_inertia":
                full = 0.5 * (full + np.swapaxes(full, -1, -2))
            out[name] = full
        elif name in parts:
            out[name] = parts[name][0].reshape(parts[name][1]).copy()
        else:
            out[name] = np.zeros_like(getattr(m, name), dtype=np.float64)
    return out


# ------------------------------------------------------------------------------------------
# inputs
# ------------------------------------------------------------------------------------------
@dataclass
class _Inputs:
    model: Model
    scene: _Scene
    q0: np.ndarray
    qd0: np.ndarray
    controls: np.ndarray  # (T, B, nb, 6) kernel layout
    dt: float
    B: int
    T: int
    opts: Contact


def _prepare(model, q0, qd0, dt, steps, controls, contact) -> _Inputs:
    if not isinstance(model, Model):
        raise InputError("model", f"expected a simad.Model, got {type(model).__name__}")
    sc = scene(model)
    nb = len(sc.bodies)
    if not isinstance(dt, (int, float, np.floating, np.integer)) or not np.isfinite(dt) or dt <= 0:
        raise InputError("dt", f"must be a finite number > 0, got {dt!r}")
    dt = float(dt)
    opts = (contact if contact is not None else Contact())
    if not isinstance(opts, Contact):
        raise InputError("contact", f"expected a simad.Contact, got {type(opts).__name__}")
    opts = opts.validated(dt)
    q = np.asarray(q0) if q0 is not None else None
    v = np.asarray(qd0) if qd0 is not None else None
    if q is None:
        raise InputError("q0", "required")
    if q.ndim not in (1, 2) or q.shape[-1] != model.nq:
        raise InputError("q0", f"expected shape (B, {model.nq}) or ({model.nq},), got {q.shape}")
    if v is None:
        v = np.zeros(model.nv)
    if v.ndim not in (1, 2) or v.shape[-1] != model.nv:
        raise InputError("qd0", f"expected shape (B, {model.nv}) or ({model.nv},), got {v.shape}")
    c = None
    if controls is not None:
        c = np.asarray(controls)
        if c.ndim not in (3, 4) or c.shape[-2:] != (nb, 6):
            raise InputError("controls",
                             f"expected shape (B, T, {nb}, 6) or (T, {nb}, 6) (wrench per moving body), got {c.shape}")
    Bs = [a.shape[0] for a in (q, v) if a.ndim == 2] + ([c.shape[0]] if c is not None and c.ndim == 4 else [])
    B = max(Bs, default=1)
    for name, a, nd in (("q0", q, 2), ("qd0", v, 2), ("controls", c, 4)):
        if a is not None and a.ndim == nd and a.shape[0] not in (1, B):
            raise InputError(name, f"batch size {a.shape[0]} does not match B = {B}")
    if c is not None:
        T = c.shape[-3]
        if steps is not None and int(steps) != T:
            raise InputError("steps", f"{steps} does not match controls' T = {T}")
    else:
        if steps is None or isinstance(steps, bool) or int(steps) != steps or int(steps) < 1:
            raise InputError("steps", f"a positive integer is required without controls, got {steps!r}")
        T = int(steps)
    if T < 1:
        raise InputError("controls", "T must be >= 1")
    dtype = runtime.real_dtype()
    qb = as_array(np.broadcast_to(q if q.ndim == 2 else q[None], (B, model.nq)), (B, model.nq), "q0").astype(dtype)
    vb = as_array(np.broadcast_to(v if v.ndim == 2 else v[None], (B, model.nv)), (B, model.nv), "qd0").astype(dtype)
    for i, (qa, _) in enumerate(zip(sc.qadr, sc.vadr, strict=True)):
        nrm = np.linalg.norm(qb[:, qa + 3: qa + 7], axis=1)
        if np.any(nrm < 1e-9):
            env = int(np.argmax(nrm < 1e-9))
            raise InputError("q0", f"body '{model.body_names[sc.bodies[i]]}': zero quaternion in env {env}")
    if c is None:
        cb = np.zeros((T, B, nb, 6), dtype)
    else:
        full = np.broadcast_to(c if c.ndim == 4 else c[None], (B, T, nb, 6))
        cb = np.ascontiguousarray(np.swapaxes(as_array(full, (B, T, nb, 6), "controls"), 0, 1)).astype(dtype)
    return _Inputs(model, sc, np.ascontiguousarray(qb), np.ascontiguousarray(vb), cb, dt, B, T, opts)


def _scratch_size(inp: _Inputs) -> int:
    nb, P, Kc, nit = len(inp.scene.bodies), max(inp.scene.npair, 1), inp.scene.kmax, inp.opts.nit
    return (nit + 1) * nb * 6 + nit * nb * 6 + nb * 6 + P * Kc * K.CW + (nit + 1) * P * Kc * 4 + nb * K.DW


def _check(X: np.ndarray, T_offset: int = 0):
    """Raises NonFiniteError at the first env/step whose state is non-finite or blew up."""
    if X.size == 0 or (X.max() <= MAX_SPEED and X.min() >= -MAX_SPEED):  # NaN fails both tests
        return
    bad = ~np.isfinite(X) | (np.abs(X) > MAX_SPEED)
    if bad.any():
        t, b = np.argwhere(bad.any(axis=(2, 3)))[np.argmin(np.argwhere(bad.any(axis=(2, 3)))[:, 0])][:2]
        col = int(np.argwhere(bad[t, b])[0][1])
        field = "position" if col < 3 else "quaternion" if col < 7 else "velocity" if col < 10 else "angular_velocity"
        raise NonFiniteError(field, int(b), int(t) + T_offset - 1 if t > 0 else 0,
                             "contact rollout diverged (NaN, inf or |value| > 1e6); check dt, masses, contact options")


# ------------------------------------------------------------------------------------------
# public API
# ------------------------------------------------------------------------------------------
def contact_rollout(model: Model, q0, qd0=None, dt: float = 1e-3, *, steps: int | None = None, controls=None,
                    contact: Contact | None = None) -> Trajectory:
    """Simulates B envs of a free-body scene with contact for T steps, in one kernel launch.

    Args:
        model: a scene (free bodies and static geometry, see the module docstring).
        q0: (B, nq) or (nq,) initial configurations; qd0: (B, nv) or (nv,) velocities (default 0).
        dt: step, s. steps: T (needed without ``controls``).
        controls: (B, T, nmov, 6) or (T, nmov, 6) world-frame force and torque per moving body.
        contact: ``Contact`` options (default: impulse mode with time-of-impact correction).

    Returns:
        ``Trajectory`` with q (B, T+1, nq), qd (B, T+1, nv) and u = the controls (B, T, nmov, 6).

    Raises:
        InputError (field named), ModelError (not a free-body scene), NonFiniteError.
    """
    inp = _prepare(model, q0, qd0, dt, steps, controls, contact)
    X = _forward_numpy(inp)
    q, qd = _unpack_numpy(inp, X)
    return Trajectory(q, qd, np.swapaxes(inp.controls, 0, 1).copy(), inp.dt, f"contact:{inp.opts.mode}")


def _forward_numpy(inp: _Inputs) -> np.ndarray:
    dtype = runtime.real_dtype()
    sc, nb = inp.scene, len(inp.scene.bodies)
    X = np.zeros((inp.T + 1, inp.B, nb, 13), dtype)
    prm = _params(inp.model, sc).astype(dtype)
    cfg = np.concatenate([inp.opts.cfg(), sc.geo.reshape(-1)]).astype(dtype)
    K.pack_kernel(inp.q0, inp.qd0, prm, sc.top, X)
    S = np.zeros((inp.B, _scratch_size(inp)), dtype)
    cnt = np.zeros((inp.B, nb), np.int32)
    cand, ncand = np.zeros((inp.B, max(sc.nslot, 1)), np.int32), np.zeros(inp.B, np.int32)
    BD = np.zeros((inp.B, K.BW * inp.model.ngeom), dtype)
    order = np.ascontiguousarray(np.tile(np.arange(inp.model.ngeom, dtype=np.int32), (inp.B, 1)))
    o = inp.opts
    K.rollout_kernel(X, inp.controls, prm, cfg, sc.top, S, cnt, BD, sc.bpt, order, cand, ncand, sc.nslot, inp.dt,
                     MODES[o.mode], o.nit, bool(o.toi), *batch_mode(inp.B), _types(sc))
    _check(X)
    return X


def _types(sc: _Scene) -> tuple:
    return tuple((int(g[0]), int(g[1])) for g in sc.groups)


def _unpack_numpy(inp: _Inputs, X: np.ndarray):
    dtype = runtime.real_dtype()
    m = inp.model
    q = np.zeros((inp.B, inp.T + 1, m.nq), dtype)
    qd = np.zeros((inp.B, inp.T + 1, m.nv), dtype)
    K.unpack_kernel(X, _params(m, inp.scene).astype(dtype), inp.scene.top, q, qd)
    return q, qd


def _nd(shape, dtype, grad=True):
    return ti.ndarray(dtype, shape, needs_grad=grad)


def _reverse(inp: _Inputs, cot, params, quality: bool):
    """Forward (recorded), then the per-step adjoints in reverse. ``cot(q, qd)`` returns the
    cotangents (q_bar, qd_bar, value) of the trajectory."""
    m, sc = inp.model, inp.scene
    names = _param_names(m, params)
    prm_np = _params(m, sc)
    # forward: the fused kernel; its recorded states X (T+1, B, nb, 13) feed the reverse pass
    Xn = _forward_numpy(inp)
    qn, qdn = _unpack_numpy(inp, Xn)
    qbar, vbar, value = cot(qn, qdn)
    if SOLVER_ADJOINT == "taichi":
        Xg0, gprm, gu, nsw, G = _reverse_taichi(inp, prm_np, Xn, qbar, vbar, quality)
    else:
        Xg0, gprm, gu, nsw, G = _reverse_hand(inp, prm_np, Xn, qbar, vbar, quality)
    gq0, gqd0, gprm0 = _pack_adjoint(inp, prm_np, Xg0)
    switches = np.zeros(inp.B, np.int64)
    growth = np.zeros(inp.B)
    growth_step = np.full(inp.B, -1, np.int64)
    if quality:
        norms = G  # (T+1, B): |adjoint of state t| once step t's adjoint is complete
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.where(norms[1:] > 0, norms[:-1] / norms[1:], 0.0)  # growth from t+1 to t
        growth = ratio.max(axis=0)
        growth_step = np.where(growth > 0, ratio.argmax(axis=0), -1)
        switches = nsw.astype(np.int64)
    gp = _split_params(m, sc, (gprm + gprm0).astype(np.float64), names)
    for name, a in (("q0", gq0), ("qd0", gqd0), ("controls", gu)):
        if not np.all(np.isfinite(a)):
            env = int(np.argwhere(~np.isfinite(a))[0][0])
            raise NonFiniteError(f"gradient.{name}", env, None, "the contact gradient is not finite")
    return gq0, gqd0, gu, gp, value, GradientQuality(switches, growth, growth_step)


def _pack_adjoint(inp: _Inputs, prm_np: np.ndarray, Xg0: np.ndarray):
    """Reverse of ``pack_kernel`` (Taichi's autodiff: one simple kernel): the cotangent of X[0]
    (B, nb, 13) -> those of q0, qd0 and of the parameters (the COM offsets)."""
    m, sc = inp.model, inp.scene
    tf = ti.f64 if runtime.real_dtype() == np.float64 else ti.f32
    X0 = _nd((1,) + Xg0.shape, tf)
    X0.grad.from_numpy(np.ascontiguousarray(Xg0[None]))
    prm = _nd(prm_np.shape, tf)
    prm.from_numpy(prm_np.astype(runtime.real_dtype()))
    q0, qd0 = _nd((inp.B, m.nq), tf), _nd((inp.B, m.nv), tf)
    q0.from_numpy(inp.q0)
    qd0.from_numpy(inp.qd0)
    top = ti.ndarray(ti.i32, sc.top.shape)
    top.from_numpy(sc.top)
    K.pack_kernel.grad(q0, qd0, prm, top, X0)
    return (q0.grad.to_numpy().astype(np.float64), qd0.grad.to_numpy().astype(np.float64),
            prm.grad.to_numpy().astype(np.float64))


def _reverse_hand(inp: _Inputs, prm_np, Xn, qbar, vbar, quality: bool):
    """The hand-written reverse pass (``contact_adjoint``): one launch for every step, on numpy
    buffers (no Taichi autodiff, so no ndarray copies of the trajectory). Returns the cotangent
    of X[0], the parameters' (summed over envs), the controls' (B, T, nb, 6), the mode-switch
    counts (B,) and the adjoint norms (T+1, B)."""
    m, sc = inp.model, inp.scene
    nb, B, T = len(sc.bodies), inp.B, inp.T
    dtype = runtime.real_dtype()
    o = inp.opts
    prm = np.ascontiguousarray(prm_np, dtype)
    cfg = np.concatenate([o.cfg(), sc.geo.reshape(-1)]).astype(dtype)
    Xg = np.zeros_like(Xn)
    Ug = np.zeros_like(inp.controls)
    PG = np.zeros((B, prm.shape[0]), dtype)  # per-env parameter cotangents
    S = np.zeros((B, _scratch_size(inp)), dtype)  # the broad phase relies on unvisited slots reading as inactive
    Sg = np.zeros_like(S)
    ncs = max(sc.nslot, 1)
    cnt = np.zeros((B, nb), np.int32)
    cand, ncand = np.zeros((B, ncs), np.int32), np.zeros(B, np.int32)
    BD = np.zeros((B, K.BW * m.ngeom), dtype)
    order = np.ascontiguousarray(np.tile(np.arange(m.ngeom, dtype=np.int32), (B, 1)))
    prev, nsw = np.zeros((B, ncs), np.int32), np.zeros(B, np.int32)
    G = np.zeros((T + 1, B), dtype)
    KA.unpack_adjoint_kernel(Xn, Xg, prm, PG, sc.top, np.ascontiguousarray(qbar, dtype),
                             np.ascontiguousarray(vbar, dtype))
    KA.reverse_kernel(Xn, Xg, inp.controls, Ug, prm, PG, cfg, sc.top, S, Sg, cnt, BD, sc.bpt, order, cand, ncand,
                      prev, nsw, G, sc.nslot, inp.dt, MODES[o.mode], o.nit, bool(o.toi), *batch_mode(B), _types(sc),
                      int(quality))
    gu = np.swapaxes(Ug, 0, 1).astype(np.float64)
    return Xg[0], PG.sum(axis=0, dtype=np.float64), gu, nsw, G


def _reverse_taichi(inp: _Inputs, prm_np, Xn, qbar, vbar, quality: bool):
    """The reference reverse pass: the forward's stage kernels step by step and Taichi's reverse
    mode of each (the tests compare the hand-written pass with it). Returns as ``_reverse_hand``."""
    m, sc = inp.model, inp.scene
    nb, B, T = len(sc.bodies), inp.B, inp.T
    dtype = runtime.real_dtype()
    tf = ti.f64 if dtype == np.float64 else ti.f32
    o = inp.opts
    mode, nit, toi = MODES[o.mode], o.nit, bool(o.toi)
    X = _nd((T + 1, B, nb, 13), tf)
    X.from_numpy(Xn)
    U = _nd((T, B, nb, 6), tf)
    U.from_numpy(inp.controls)
    prm = _nd(prm_np.shape, tf)
    prm.from_numpy(prm_np.astype(dtype))
    cfg = ti.ndarray(tf, (K.NCFG + 12 * m.ngeom,))
    cfg.from_numpy(np.concatenate([o.cfg(), sc.geo.reshape(-1)]).astype(dtype))
    top = ti.ndarray(ti.i32, sc.top.shape)
    top.from_numpy(sc.top)
    S = _nd((B, _scratch_size(inp)), tf)
    cnt = ti.ndarray(ti.i32, (B, nb))
    cand, ncand = ti.ndarray(ti.i32, (B, max(sc.nslot, 1))), ti.ndarray(ti.i32, (B,))
    S.fill(0)  # the broad phase relies on unvisited slots reading as inactive
    ncand.fill(0)
    BD = ti.ndarray(tf, (B, K.BW * m.ngeom))
    bpt = ti.ndarray(ti.i32, sc.bpt.shape)
    bpt.from_numpy(sc.bpt)
    order = ti.ndarray(ti.i32, (B, m.ngeom))
    order.from_numpy(np.ascontiguousarray(np.tile(np.arange(m.ngeom, dtype=np.int32), (B, 1))))
    Q, QD = _nd((B, T + 1, m.nq), tf), _nd((B, T + 1, m.nv), tf)
    Q.grad.from_numpy(np.asarray(qbar, dtype))
    QD.grad.from_numpy(np.asarray(vbar, dtype))
    K.unpack_kernel.grad(X, prm, top, Q, QD)
    prev = ti.ndarray(ti.i32, (B, max(sc.nslot, 1)))
    nsw = ti.ndarray(ti.i32, (B,))
    nsw.fill(0)
    ns, dt = sc.nslot, inp.dt
    spread, serial = batch_mode(B)
    types = _types(sc)
    G = np.zeros((T + 1, B), dtype)
    for t in reversed(range(T)):
        K.step_kernel(X, U, prm, cfg, top, S, cnt, BD, bpt, order, cand, ncand, ns, dt, mode, nit, toi, spread,
                      serial, types, t)
        if quality:
            K.switches_kernel(S, top, prev, nsw, sc.nslot, nit, int(t < T - 1))
        nc = int(ncand.to_numpy().max())  # the candidate loops' bound (the largest count over envs)
        K.post_kernel.grad(X, prm, top, S, cand, ncand, t, nc, dt, nit, mode, toi)
        for it in reversed(range(nit)):
            K.iter_kernel.grad(X, prm, top, S, cnt, cand, ncand, t, nc, it, nit, mode)
        for ta, tb, s0, s1 in reversed(sc.groups):
            K.detect_kernel.grad(X, prm, cfg, top, S, cnt, cand, ncand, t, s0, s1, nc, dt, nit, mode, toi, ta, tb)
        K.init_kernel.grad(X, U, prm, top, S, cnt, t, dt, nit)
        if quality:
            K.adjoint_norm_kernel(X.grad, G, t)
    gu = np.swapaxes(U.grad.to_numpy(), 0, 1).astype(np.float64)
    Xg0 = X.grad.to_numpy()[0]
    return Xg0, prm.grad.to_numpy().astype(np.float64), gu, nsw.to_numpy(), G


def _param_names(m: Model, params):
    if params is None:
        return CONTACT_PARAMS
    names = (params,) if isinstance(params, str) else tuple(params)
    for n in names:
        if n not in m.param_names:
            raise InputError("params", f"unknown parameter '{n}' (differentiable: {sorted(m.param_names)})")
    return names


def _finish(inp, gq0, gqd0, gu, gp, value, quality, fd_check, loss_fn, rng):
    from .diff import Gradients

    if fd_check:
        rng = np.random.default_rng(rng)
        dq = rng.normal(size=gq0.shape)
        dv = rng.normal(size=gqd0.shape)
        du = rng.normal(size=gu.shape)
        for qa in inp.scene.qadr:  # keep quaternion directions tangent
            quat = inp.q0[:, qa + 3: qa + 7]
            quat = quat / np.linalg.norm(quat, axis=1, keepdims=True)
            dq[:, qa + 3: qa + 7] -= np.sum(dq[:, qa + 3: qa + 7] * quat, axis=1, keepdims=True) * quat
        nrm = np.sqrt(np.sum(dq ** 2, axis=1) + np.sum(dv ** 2, axis=1) + np.sum(du ** 2, axis=(1, 2, 3)))
        dq, dv, du = dq / nrm[:, None], dv / nrm[:, None], du / nrm[:, None, None, None]
        h = float(fd_check) if not isinstance(fd_check, bool) else 1e-6
        lp = loss_fn(inp.q0 + h * dq, inp.qd0 + h * dv, np.swapaxes(inp.controls, 0, 1) + h * du)
        lm = loss_fn(inp.q0 - h * dq, inp.qd0 - h * dv, np.swapaxes(inp.controls, 0, 1) - h * du)
        fd = (lp - lm) / (2 * h)
        ad = np.sum(gq0 * dq, axis=1) + np.sum(gqd0 * dv, axis=1) + np.sum(gu * du, axis=(1, 2, 3))
        quality.fd_directional, quality.ad_directional = fd, ad
        quality.fd_rel_error = np.abs(fd - ad) / np.maximum(np.maximum(np.abs(fd), np.abs(ad)), 1e-12)
    g = Gradients(q0=gq0, qd0=gqd0, controls=gu, gains=None, params=gp, loss=value, checkpoint_every=inp.T)
    g.quality = quality
    return g


def contact_vjp(model: Model, q0, qd0=None, dt: float = 1e-3, q_bar=None, qd_bar=None, *, steps: int | None = None,
                controls=None, contact: Contact | None = None, params=None, fd_check: bool | float = False,
                seed: int = 0):
    """Reverse-mode product of ``contact_rollout``: the gradient of sum <q_bar, q> + <qd_bar, qd>.

    Args:
        model, q0, qd0, dt, steps, controls, contact: as ``contact_rollout``.
        q_bar: (B, T+1, nq) and qd_bar: (B, T+1, nv) cotangents (None: zero).
        params: names from ``model.param_names`` (default: the contact-relevant ones: body_mass,
            body_inertia, body_com, geom_size, geom_friction, geom_restitution, gravity). Other
            names get zeros. Gradients are summed over the batch.
        fd_check: also run a central finite-difference spot check along a random unit direction
            of (q0, qd0, controls) per env (True: step 1e-6; a float: that step). Costs 2 rollouts.
        seed: of that random direction.

    Returns:
        ``Gradients`` (q0, qd0, controls (B, T, nmov, 6), params) with ``.quality`` a
        ``GradientQuality`` (mode switches, largest adjoint growth and its step, the FD check).
    """
    inp = _prepare(model, q0, qd0, dt, steps, controls, contact)
    B, T = inp.B, inp.T
    qb = as_array(q_bar, (B, T + 1, model.nq), "q_bar") if q_bar is not None else np.zeros((B, T + 1, model.nq))
    vb = as_array(qd_bar, (B, T + 1, model.nv), "qd_bar") if qd_bar is not None else np.zeros((B, T + 1, model.nv))

    def cot(q, qd):
        return qb, vb, np.sum(qb * q, axis=(1, 2)) + np.sum(vb * qd, axis=(1, 2))

    def loss_fn(q0_, qd0_, u_):
        tr = contact_rollout(model, q0_, qd0_, inp.dt, controls=u_, contact=inp.opts)
        return np.sum(qb * tr.q, axis=(1, 2)) + np.sum(vb * tr.qd, axis=(1, 2))

    out = _reverse(inp, cot, params, True)
    g = _finish(inp, *out, fd_check, loss_fn, seed)
    g.loss = None
    return g


def contact_value_and_grad(model: Model, q0, qd0=None, dt: float = 1e-3, cost=None, *, steps: int | None = None,
                           controls=None, contact: Contact | None = None, params=None,
                           fd_check: bool | float = False, seed: int = 0):
    """The loss of a contact rollout under a built-in ``QuadraticCost`` (states, frame positions
    of the moving bodies' frames and sites; its control terms do not apply: ``nu`` = 0) and its
    gradient. Arguments as ``contact_vjp``; ``Gradients.loss`` holds the loss per env."""
    from .costs import QuadraticCost

    if not isinstance(cost, QuadraticCost):
        raise InputError("cost", f"expected a simad.QuadraticCost, got {type(cost).__name__}")
    inp = _prepare(model, q0, qd0, dt, steps, controls, contact)
    bound = cost.bind(model, inp.B, inp.T)

    def cot(q, qd):
        cq, cv, _, val = bound.segment(0, q, qd, np.zeros((inp.B, inp.T, 0)), 0)
        return cq, cv, val

    def loss_fn(q0_, qd0_, u_):
        tr = contact_rollout(model, q0_, qd0_, inp.dt, controls=u_, contact=inp.opts)
        return bound.segment(0, tr.q, tr.qd, np.zeros((inp.B, inp.T, 0)), 0)[3]

    out = _reverse(inp, cot, params, True)
    return _finish(inp, *out, fd_check, loss_fn, seed)


__all__ = ["Contact", "GradientQuality", "contact_rollout", "contact_value_and_grad", "contact_vjp", "scene"]
