using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Nabla;

/// <summary>
/// Rows split by column residue mod 4 and merged back, 16 positions of each residue per step through two-source
/// permutes (AVX-512): the data movement around Winograd F(4×4, 3×3), whose transforms run on whole planes of one residue
/// (<see cref="PackedConv2d"/>). The two-level 2-way splits and merges they replace, with their scalar edges, were a
/// fifth of a 64-channel 56×56 layer's time at one thread (bench/README.md, "Session 20").
/// </summary>
internal static partial class Cpu
{
    /// <summary>Whether <see cref="SplitRow4"/> and <see cref="MergeRow4"/> may run (AVX-512F). Settable by tests and
    /// measurements; callers fall back to two levels of 2-way splits and merges when it is off.</summary>
    internal static bool UseRow4 = Avx512F.IsSupported;

    // Lanes of the two-source permutes: residues 0 and 1 (2 and 3) of 32 floats; the low (high) eight lanes of each source.
    static readonly Vector512<int> Res01 = Vector512.Create(0, 4, 8, 12, 16, 20, 24, 28, 1, 5, 9, 13, 17, 21, 25, 29);
    static readonly Vector512<int> Res23 = Vector512.Create(2, 6, 10, 14, 18, 22, 26, 30, 3, 7, 11, 15, 19, 23, 27, 31);
    static readonly Vector512<int> LowHalves = Vector512.Create(0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23);
    static readonly Vector512<int> HighHalves = Vector512.Create(8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31);
    // Positions 4j + q of j = 0..3 (Mix0) and 4..7 (Mix1), from [r0 (8 lanes), r1 (8 lanes)] and [r2, r3].
    static readonly Vector512<int> Mix0 = Vector512.Create(0, 8, 16, 24, 1, 9, 17, 25, 2, 10, 18, 26, 3, 11, 19, 27);
    static readonly Vector512<int> Mix1 = Vector512.Create(4, 12, 20, 28, 5, 13, 21, 29, 6, 14, 22, 30, 7, 15, 23, 31);

    static readonly Vector512<int> Lanes = Vector512.Create(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);

    /// <summary>The 16 floats of P from column <paramref name="at"/> on, P being the row x (w floats) at column 0 among
    /// zeros: a plain load inside the row, a masked one (no fault on the lanes left out) across its edges.</summary>
    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveInlining)]
    static unsafe Vector512<float> LoadPadded(float* x, int at, int w)
    {
        if (at >= 0 && at + 16 <= w) return Vector512.Load(x + at);
        if (at >= w || at + 16 <= 0) return Vector512<float>.Zero;
        var i = Vector512.Create(at) + Lanes;
        var inside = Vector512.GreaterThanOrEqual(i, Vector512<int>.Zero) & Vector512.LessThan(i, Vector512.Create(w));
        return Avx512F.MaskLoad(x + at, inside.AsSingle(), Vector512<float>.Zero);
    }

    /// <summary>
    /// r_q[j] = P[4j + q] for q = 0..3 and j &lt; n, where P is one row of <paramref name="w"/> floats at
    /// <paramref name="x"/> placed at column <paramref name="pad"/> among zeros (all zeros when x is null).
    /// Writes whole blocks of 16: each r_q gets up to 15 floats of junk past n, which the caller must leave room for and
    /// overwrite or ignore. Needs AVX-512F.
    /// </summary>
    internal static unsafe void SplitRow4(float* x, int w, int pad, float* r0, float* r1, float* r2, float* r3, int n)
    {
        for (int j = 0; j < n; j += 16)
        {
            Vector512<float> v0, v1, v2, v3;
            if (x is null) v0 = v1 = v2 = v3 = Vector512<float>.Zero;
            else
            {
                int at = 4 * j - pad;
                v0 = LoadPadded(x, at, w);
                v1 = LoadPadded(x, at + 16, w);
                v2 = LoadPadded(x, at + 32, w);
                v3 = LoadPadded(x, at + 48, w);
            }
            var e01 = Avx512F.PermuteVar16x32x2(v0, Res01, v1);   // residue 0 | residue 1, positions j .. j + 7
            var o01 = Avx512F.PermuteVar16x32x2(v0, Res23, v1);   // residue 2 | residue 3
            var e23 = Avx512F.PermuteVar16x32x2(v2, Res01, v3);   // the same for positions j + 8 .. j + 15
            var o23 = Avx512F.PermuteVar16x32x2(v2, Res23, v3);
            Avx512F.PermuteVar16x32x2(e01, LowHalves, e23).Store(r0 + j);
            Avx512F.PermuteVar16x32x2(e01, HighHalves, e23).Store(r1 + j);
            Avx512F.PermuteVar16x32x2(o01, LowHalves, o23).Store(r2 + j);
            Avx512F.PermuteVar16x32x2(o01, HighHalves, o23).Store(r3 + j);
        }
    }

    /// <summary>
    /// dst[4j + q] = r_q[j] for the <paramref name="w"/> positions of one output row. Reads whole blocks of 16 from each
    /// r_q (up to ceil(w / 4) rounded up to 16 floats; what lies past the row's positions is read and dropped, so it must be
    /// readable memory) and writes exactly w floats. Needs AVX-512F.
    /// </summary>
    internal static unsafe void MergeRow4(float* r0, float* r1, float* r2, float* r3, float* dst, int w)
    {
        for (int j = 0, pos = 0; pos < w; j += 16)
        {
            var y0 = Vector512.Load(r0 + j);
            var y1 = Vector512.Load(r1 + j);
            var y2 = Vector512.Load(r2 + j);
            var y3 = Vector512.Load(r3 + j);
            var a = Avx512F.PermuteVar16x32x2(y0, LowHalves, y1);    // r0, r1 at j .. j + 7
            var b = Avx512F.PermuteVar16x32x2(y0, HighHalves, y1);   // r0, r1 at j + 8 .. j + 15
            var c = Avx512F.PermuteVar16x32x2(y2, LowHalves, y3);
            var d = Avx512F.PermuteVar16x32x2(y2, HighHalves, y3);
            Put(Avx512F.PermuteVar16x32x2(a, Mix0, c), dst, ref pos, w);
            Put(Avx512F.PermuteVar16x32x2(a, Mix1, c), dst, ref pos, w);
            Put(Avx512F.PermuteVar16x32x2(b, Mix0, d), dst, ref pos, w);
            Put(Avx512F.PermuteVar16x32x2(b, Mix1, d), dst, ref pos, w);
        }

        [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveInlining)]
        static void Put(Vector512<float> v, float* dst, ref int pos, int w)
        {
            if (pos + 16 <= w) v.Store(dst + pos);
            else if (pos < w) Avx512F.MaskStore(dst + pos, Vector512.LessThan(Lanes, Vector512.Create(w - pos)).AsSingle(), v);
            pos += 16;
        }
    }
}
