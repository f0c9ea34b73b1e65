"""Small Taichi functions shared by the kernels: rotations, quaternions, packed-array access.

Packed layouts (see ``simad.kinematics.pack_model``):
- a pose row holds 12 numbers: the rotation row-major (9) then the position (3);
- quaternions are scalar-first (w, x, y, z).
"""


import taichi as ti

ROT, POS = 0, 9  # offsets inside a 12-number pose row


@ti.func
def vec3(a: ti.template(), i, j, off):
    """a[i, j, off:off+3] as a vector (3-D ndarray)."""
    return ti.Vector([a[i, j, off], a[i, j, off + 1], a[i, j, off + 2]])


@ti.func
def mat3(a: ti.template(), i, j, off):
    """a[i, j, off:off+9] as a row-major 3x3 matrix (3-D ndarray)."""
    return ti.Matrix([[a[i, j, off + 3 * r + c] for c in ti.static(range(3))] for r in ti.static(range(3))])


@ti.func
def row_vec3(a: ti.template(), i, off):
    """a[i, off:off+3] (2-D ndarray)."""
    return ti.Vector([a[i, off], a[i, off + 1], a[i, off + 2]])


@ti.func
def row_mat3(a: ti.template(), i, off):
    """a[i, off:off+9] as a row-major 3x3 matrix (2-D ndarray)."""
    return ti.Matrix([[a[i, off + 3 * r + c] for c in ti.static(range(3))] for r in ti.static(range(3))])


@ti.func
def store_pose(a: ti.template(), i, j, R, p):
    for r, c in ti.static(ti.ndrange(3, 3)):
        a[i, j, ROT + 3 * r + c] = R[r, c]
    for k in ti.static(range(3)):
        a[i, j, POS + k] = p[k]


@ti.func
def skew(w):
    return ti.Matrix([[0.0, -w[2], w[1]], [w[2], 0.0, -w[0]], [-w[1], w[0], 0.0]])


@ti.func
def axis_angle(axis, angle):
    """Rodrigues: I + sin(a) K + (1 - cos(a)) K^2 for a unit axis."""
    K = skew(axis)
    return ti.Matrix.identity(float, 3) + ti.sin(angle) * K + (1.0 - ti.cos(angle)) * (K @ K)


@ti.func
def quat_to_mat(w, x, y, z):
    """Rotation of the quaternion (w, x, y, z), normalised first (any non-zero norm)."""
    n = ti.sqrt(w * w + x * x + y * y + z * z)
    w, x, y, z = w / n, x / n, y / n, z / n
    return ti.Matrix(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
            [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
            [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
        ]
    )


@ti.func
def quat_mul(a, b):
    return ti.Vector(
        [
            a[0] * b[0] - a[1] * b[1] - a[2] * b[2] - a[3] * b[3],
            a[0] * b[1] + a[1] * b[0] + a[2] * b[3] - a[3] * b[2],
            a[0] * b[2] - a[1] * b[3] + a[2] * b[0] + a[3] * b[1],
            a[0] * b[3] + a[1] * b[2] - a[2] * b[1] + a[3] * b[0],
        ]
    )


@ti.func
def quat_exp(w):
    """exp(w / 2) for a rotation vector w; the small-angle branch is the Taylor series."""
    th = w.norm()
    half = 0.5 * th
    k = 0.5 - th * th / 48.0
    if th > 1e-6:
        k = ti.sin(half) / th
    return ti.Vector([ti.cos(half), k * w[0], k * w[1], k * w[2]])


@ti.func
def mat_to_quat(R):
    """Unit quaternion of a rotation matrix (Shepperd's method, branch on the largest term)."""
    t = R[0, 0] + R[1, 1] + R[2, 2]
    q = ti.Vector([1.0, 0.0, 0.0, 0.0])
    if t > 0.0:
        s = ti.sqrt(t + 1.0) * 2.0
        q = ti.Vector([0.25 * s, (R[2, 1] - R[1, 2]) / s, (R[0, 2] - R[2, 0]) / s, (R[1, 0] - R[0, 1]) / s])
    elif R[0, 0] > R[1, 1] and R[0, 0] > R[2, 2]:
        s = ti.sqrt(1.0 + R[0, 0] - R[1, 1] - R[2, 2]) * 2.0
        q = ti.Vector([(R[2, 1] - R[1, 2]) / s, 0.25 * s, (R[0, 1] + R[1, 0]) / s, (R[0, 2] + R[2, 0]) / s])
    elif R[1, 1] > R[2, 2]:
        s = ti.sqrt(1.0 + R[1, 1] - R[0, 0] - R[2, 2]) * 2.0
        q = ti.Vector([(R[0, 2] - R[2, 0]) / s, (R[0, 1] + R[1, 0]) / s, 0.25 * s, (R[1, 2] + R[2, 1]) / s])
    else:
        s = ti.sqrt(1.0 + R[2, 2] - R[0, 0] - R[1, 1]) * 2.0
        q = ti.Vector([(R[1, 0] - R[0, 1]) / s, (R[0, 2] + R[2, 0]) / s, (R[1, 2] + R[2, 1]) / s, 0.25 * s])
    return q / q.norm()


@ti.func
def quat_log(r):
    """Rotation vector of a unit quaternion, angle in [0, pi] (like ``rotations.quat_log``)."""
    if r[0] < 0.0:
        r = -r
    v = ti.Vector([r[1], r[2], r[3]])
    s = v.norm()
    k = 2.0 / ti.max(r[0], 1e-300)
    if s > 1e-12:
        k = 2.0 * ti.atan2(s, r[0]) / s
    return k * v


@ti.func
def rot_log(R):
    """Rotation vector of R, angle in [0, pi] (through the quaternion: robust near 0 and pi)."""
    return quat_log(mat_to_quat(R))
