using Xunit;

namespace Nabla.Tests;

/// <summary>
/// Every SIMD path against a plain scalar loop at every length 0..256: the elementwise drivers (contiguous,
/// offset, odd-strided, transposed and broadcast-scalar operands), the reductions, and the packed GEMM
/// against <see cref="Gemm.Reference"/>.
/// </summary>
public class KernelTests
{
    const int MaxLen = 256;

    static float[] RandomFloats(Random rng, int n, double lo = -2, double hi = 2)
    {
        var r = new float[n];
        for (int i = 0; i < n; i++) r[i] = (float)(lo + (hi - lo) * rng.NextDouble());
        return r;
    }

    /// <summary>The same values laid out four ways: contiguous, at an offset, with an odd stride (3), and as a transposed column.</summary>
    static IEnumerable<(string layout, Tensor t)> Layouts(float[] v)
    {
        int n = v.Length;
        yield return ("contiguous", Tensor.FromArray(v));
        var padded = new float[n + 1];
        v.CopyTo(padded, 1);
        yield return ("offset", Tensor.FromArray(padded).Slice(0, 1, n + 1));
        var strided = new float[3 * n + 1];
        for (int i = 0; i < n; i++) strided[3 * i] = v[i];
        yield return ("stride 3", Tensor.FromArray(strided).Slice(0, 0, 3 * n, 3));
        // A [2, n] matrix stored as [n, 2]: row 0 of the transpose has stride 2.
        var pairs = new float[2 * n];
        for (int i = 0; i < n; i++) pairs[2 * i] = v[i];
        yield return ("transposed", Tensor.FromArray(pairs, n, 2).T.Select(0, 0));
    }

    static void AssertClose(float[] expected, float[] actual, string what, double rtol = 0, double atol = 0)
    {
        Assert.True(expected.Length == actual.Length, $"{what}: length {actual.Length}, expected {expected.Length}");
        for (int i = 0; i < expected.Length; i++)
        {
            float e = expected[i], a = actual[i];
            if (float.IsNaN(e) && float.IsNaN(a)) continue;
            if (e == a) continue;
            Assert.True(Math.Abs(e - a) <= atol + rtol * Math.Abs(e), $"{what}: element {i} is {a:R}, expected {e:R}");
        }
    }

    static readonly (string name, Func<Tensor, Tensor, Tensor> op, Func<float, float, float> reference)[] BinaryFloat =
    [
        ("add", (a, b) => a.Add(b), (x, y) => x + y),
        ("sub", (a, b) => a.Sub(b), (x, y) => x - y),
        ("mul", (a, b) => a.Mul(b), (x, y) => x * y),
        ("div", (a, b) => a.Div(b), (x, y) => x / y),
        ("maximum", (a, b) => a.Maximum(b), (x, y) => float.IsNaN(x) || x > y ? x : y),
        ("minimum", (a, b) => a.Minimum(b), (x, y) => float.IsNaN(x) || x < y ? x : y),
    ];

    [Fact]
    public void BinaryFloat32AllLengthsAndLayouts()
    {
        var rng = new Random(1);
        for (int n = 0; n <= MaxLen; n++)
        {
            var a = RandomFloats(rng, n);
            var b = RandomFloats(rng, n, 0.5, 3);
            if (n > 3) a[3] = float.NaN;
            float s = (float)(0.5 + rng.NextDouble());
            foreach (var (name, op, reference) in BinaryFloat)
            {
                var expected = a.Zip(b, reference).ToArray();
                var right = a.Select(x => reference(x, s)).ToArray();
                var left = b.Select(y => reference(s, y)).ToArray();
                foreach (var (la, ta) in Layouts(a))
                foreach (var (lb, tb) in Layouts(b))
                    AssertClose(expected, op(ta, tb).ToArray<float>(), $"{name} n={n} {la}/{lb}");
                foreach (var (la, ta) in Layouts(a))
                {
                    AssertClose(right, op(ta, Tensor.Scalar(s)).ToArray<float>(), $"{name} n={n} {la}/scalar");
                    AssertClose(right, op(ta, Tensor.Full([1], s)).ToArray<float>(), $"{name} n={n} {la}/[1]");
                }
                foreach (var (lb, tb) in Layouts(b))
                    AssertClose(left, op(Tensor.Scalar(s), tb).ToArray<float>(), $"{name} n={n} scalar/{lb}");
            }
        }
    }

    [Fact]
    public void BinaryOtherDTypesAllLengths()
    {
        var rng = new Random(2);
        for (int n = 0; n <= MaxLen; n++)
        {
            var ad = Enumerable.Range(0, n).Select(_ => rng.NextDouble() * 4 - 2).ToArray();
            var bd = Enumerable.Range(0, n).Select(_ => rng.NextDouble() * 4 + 0.5).ToArray();
            var a64 = Tensor.FromArray(ad);
            var b64 = Tensor.FromArray(bd).Reshape(n, 1).T.Reshape(n);
            Assert.Equal(ad.Zip(bd, (x, y) => x * y - x / y).ToArray(), a64.Mul(b64).Sub(a64.Div(b64)).ToArray<double>());
            var al = Enumerable.Range(0, n).Select(_ => (long)rng.Next(-1000, 1000)).ToArray();
            var bl = Enumerable.Range(0, n).Select(_ => (long)rng.Next(-1000, 1000)).ToArray();
            Assert.Equal(al.Zip(bl, (x, y) => x * y + x - 7).ToArray(), Tensor.FromArray(al).Mul(Tensor.FromArray(bl)).Add(Tensor.FromArray(al)).Sub(7).ToArray<long>());
            var ai = al.Select(v => (int)v).ToArray();
            var bi = bl.Select(v => (int)v).ToArray();
            var strided = Tensor.FromArray(ai.Concat(bi).ToArray(), 2, n).T.Select(1, 1);   // bi with stride 1 over a transposed view
            Assert.Equal(ai.Zip(bi, (x, y) => Math.Max(x, y) - y).ToArray(), Tensor.FromArray(ai).Maximum(strided).Sub(strided).ToArray<int>());
            var ab = ai.Select(v => (byte)(v & 0x7F)).ToArray();
            Assert.Equal(ab.Select(v => (byte)(v + 3)).ToArray(), Tensor.FromArray(ab).Add(3).ToArray<byte>());
        }
    }

    static readonly (string name, Func<Tensor, Tensor> op, Func<double, double> reference, double lo, double hi)[] UnaryFloat =
    [
        ("exp", x => x.Exp(), Math.Exp, -10, 10),
        ("log", x => x.Log(), Math.Log, 1e-3, 100),
        ("log1p", x => x.Log1p(), v => Math.Log(1 + v), -0.9, 10),
        ("expm1", x => x.Expm1(), v => Math.Exp(v) - 1, -3, 3),
        ("sqrt", x => x.Sqrt(), Math.Sqrt, 0, 100),
        ("neg", x => x.Neg(), v => -v, -5, 5),
        ("abs", x => x.Abs(), Math.Abs, -5, 5),
        ("sin", x => x.Sin(), Math.Sin, -6, 6),
        ("cos", x => x.Cos(), Math.Cos, -6, 6),
        ("tanh", x => x.Tanh(), Math.Tanh, -6, 6),
        ("sigmoid", x => x.Sigmoid(), v => 1 / (1 + Math.Exp(-v)), -10, 10),
        ("relu", x => x.Relu(), v => Math.Max(v, 0), -5, 5),
        ("erf", x => x.Erf(), ErfReference, -4, 4),
        ("floor", x => x.Floor(), Math.Floor, -5, 5),
        ("round", x => x.Round(), v => Math.Round(v, MidpointRounding.ToEven), -5, 5),
        ("sign", x => x.Sign(), v => Math.Sign(v), -5, 5),
    ];

    /// <summary>erf by Simpson integration of 2/√π·e^(−t²) (independent of Nabla's series).</summary>
    static double ErfReference(double x)
    {
        int steps = 2000;
        double h = x / steps, s = 0;
        for (int i = 0; i <= steps; i++)
        {
            double w = i == 0 || i == steps ? 1 : i % 2 == 1 ? 4 : 2;
            s += w * Math.Exp(-(i * h) * (i * h));
        }
        return s * h / 3 * 2 / Math.Sqrt(Math.PI);
    }

    [Fact]
    public void UnaryFloat32AllLengthsAndLayouts()
    {
        var rng = new Random(3);
        foreach (var (name, op, reference, lo, hi) in UnaryFloat)
        {
            for (int n = 0; n <= MaxLen; n++)
            {
                var a = RandomFloats(rng, n, lo, hi);
                // float32 SIMD transcendental functions are within a few ulp of the double-precision reference.
                var expected = a.Select(v => (float)reference(v)).ToArray();
                foreach (var (layout, t) in Layouts(a))
                    AssertClose(expected, op(t).ToArray<float>(), $"{name} n={n} {layout}", rtol: 4e-6, atol: 1e-6);
            }
        }
    }

    [Fact]
    public void BroadcastingOverPermutedLayoutsAgainstLoops()
    {
        // Random ranks 1-4, broadcast partners, and inputs given as permutations of their storage: every stepping
        // path of the driver (unit inner stride, scalar inner stride, generic) against an index-by-index loop.
        var rng = new Random(6);
        for (int trial = 0; trial < 300; trial++)
        {
            int rank = rng.Next(1, 5);
            var shape = Enumerable.Range(0, rank).Select(_ => rng.Next(1, 7)).ToArray();
            var sb = shape.Select(d => rng.Next(3) == 0 ? 1 : d).ToArray()[rng.Next(rank)..];
            var a = Permuted(rng, shape);
            var b = Permuted(rng, sb);
            var got = a.Add(b.Mul(2.0)).ToArray<float>();
            var av = a.ToArray<float>();
            var bv = b.ToArray<float>();
            var bs = Tensor.ContiguousStrides(sb);
            int lead = rank - sb.Length;
            var coord = new int[rank];
            for (int i = 0; i < got.Length; i++)
            {
                int bi = 0;
                for (int k = 0; k < sb.Length; k++) bi += (sb[k] == 1 ? 0 : coord[lead + k]) * bs[k];
                Assert.True(av[i] + bv[bi] * 2f == got[i], $"trial {trial} {ShapeUtil.Format(shape)} + {ShapeUtil.Format(sb)} at {i}");
                for (int k = rank - 1; k >= 0 && ++coord[k] == shape[k]; k--) coord[k] = 0;
            }
        }

        static Tensor Permuted(Random rng, int[] shape)
        {
            // Store the values in a random dimension order, then permute back to `shape`.
            int r = shape.Length;
            var order = Enumerable.Range(0, r).OrderBy(_ => rng.Next()).ToArray();
            var stored = Tensor.FromArray(RandomFloats(rng, shape.Aggregate(1, (x, y) => x * y)), order.Select(d => shape[d]).ToArray());
            var inverse = new int[r];
            for (int i = 0; i < r; i++) inverse[order[i]] = i;
            return stored.Permute(inverse);
        }
    }

    /// <summary>
    /// The float32 fast paths (fused and threaded conv, pooling and normalization kernels) against the same ops
    /// run in float64, forward and backward, at sizes large enough to take the parallel paths.
    /// </summary>
    [Fact]
    public void Float32PathsAgreeWithFloat64()
    {
        var gen = new Generator(8);
        var cases = new (string name, int[][] shapes, Func<Tensor[], Tensor> f)[]
        {
            ("conv2d", [[4, 8, 20, 20], [16, 8, 3, 3], [16]], t => Functional.Conv2d(t[0], t[1], t[2], 1, 1)),
            ("conv2d strided dilated", [[3, 6, 17, 15], [8, 6, 3, 2], [8]], t => Functional.Conv2d(t[0], t[1], t[2], (2, 1), (1, 2), (2, 1))),
            ("conv2d groups", [[2, 8, 16, 16], [8, 4, 3, 3], [8]], t => Functional.Conv2d(t[0], t[1], t[2], 1, 1, 1, groups: 2)),
            ("conv_transpose2d", [[2, 6, 9, 9], [6, 4, 3, 3], [4]], t => Functional.ConvTranspose2d(t[0], t[1], t[2], (2, 2), (1, 1), (1, 1))),
            ("max_pool2d", [[4, 8, 24, 24]], t => Functional.MaxPool2d(t[0], (3, 3), (2, 2), (1, 1))),
            ("avg_pool2d", [[4, 8, 24, 24]], t => Functional.AvgPool2d(t[0], 2)),
            ("batch_norm", [[16, 8, 12, 12], [8], [8]], t => Functional.BatchNorm(t[0], null, null, t[1], t[2], training: true)),
            ("layer_norm", [[64, 96], [96], [96]], t => Functional.LayerNorm(t[0], [96], t[1], t[2])),
            ("softmax", [[64, 130]], t => Functional.Softmax(t[0], 1)),
            ("matmul batched", [[6, 40, 50], [50, 30]], t => t[0].Matmul(t[1]).Relu()),
        };
        foreach (var (name, shapes, f) in cases)
        {
            var inputs64 = shapes.Select(s => Tensor.Randn(s, DType.Float64, gen)).ToArray();
            var x64 = inputs64.Select(t => t.Detach().RequiresGrad_()).ToArray();
            var x32 = inputs64.Select(t => t.Float().RequiresGrad_()).ToArray();
            var y64 = f(x64);
            var y32 = f(x32);
            Assert.Equal(DType.Float32, y32.DType);
            var v = Tensor.Randn(y64.Shape, DType.Float64, gen);
            y64.Backward(v);
            y32.Backward(v.Float());
            AssertNear(name, y64, y32);
            for (int i = 0; i < x64.Length; i++) AssertNear($"{name} grad {i}", x64[i].Grad!, x32[i].Grad!);
        }

        static void AssertNear(string what, Tensor want, Tensor got)
        {
            Assert.Equal(want.Shape, got.Shape);
            var w = want.ToArray<double>();
            var g = got.ToFloatArray();
            double scale = w.Length == 0 ? 1 : w.Max(Math.Abs) + 1;
            for (int i = 0; i < w.Length; i++)
                Assert.True(Math.Abs(w[i] - g[i]) <= 2e-4 * scale, $"{what} [{i}]: float32 {g[i]}, float64 {w[i]}");
        }
    }

    [Fact]
    public void ComparisonsAndWhereAllLengths()
    {
        var rng = new Random(4);
        for (int n = 0; n <= MaxLen; n++)
        {
            var a = RandomFloats(rng, n).Select(v => MathF.Round(v * 2) / 2).ToArray();   // ties are common
            var b = RandomFloats(rng, n).Select(v => MathF.Round(v * 2) / 2).ToArray();
            foreach (var (la, ta) in Layouts(a))
            {
                var tb = Tensor.FromArray(b).Flip(0).Flip(0);
                Assert.Equal(a.Zip(b, (x, y) => x < y).ToArray(), ta.Lt(tb).ToArray<bool>());
                Assert.Equal(a.Zip(b, (x, y) => x == y).ToArray(), ta.Eq(tb).ToArray<bool>());
                Assert.Equal(a.Select(x => x >= 0.5f).ToArray(), ta.Ge(0.5).ToArray<bool>());
                Assert.Equal(a.Zip(b, (x, y) => x > y ? x : y).ToArray(), Tensor.Where(ta.Gt(tb), ta, tb).ToArray<float>());
            }
        }
    }

    [Fact]
    public void SumAndExtremesOverEachDimAgainstLoops()
    {
        var rng = new Random(5);
        for (int len = 0; len <= MaxLen; len++)
        {
            // A [2, len, 3] tensor and its permutation [len, 3, 2]; reduce over every dim.
            int[] shape = [2, len, 3];
            var v = RandomFloats(rng, 2 * len * 3);
            var x = Tensor.FromArray(v, shape);
            foreach (var (t, name) in new[] { (x, "contiguous"), (x.Permute(1, 2, 0), "permuted") })
            {
                var s = t.Shape;
                var data = t.ToArray<float>();   // row-major values of t
                for (int d = 0; d < 3; d++)
                {
                    var (outer, n, inner) = Cpu.Around(s, d);
                    var sum = new float[outer * inner];
                    var absSum = new double[outer * inner];
                    var max = new float[outer * inner];
                    var arg = new long[outer * inner];
                    var cum = new float[data.Length];
                    for (int o = 0; o < outer; o++)
                    for (int i = 0; i < inner; i++)
                    {
                        double acc = 0, accAbs = 0, c = 0;
                        float best = float.NegativeInfinity;
                        for (int j = 0; j < n; j++)
                        {
                            float e = data[(o * n + j) * inner + i];
                            acc += e; accAbs += Math.Abs(e);
                            c += e;
                            cum[(o * n + j) * inner + i] = (float)c;
                            if (e > best) { best = e; arg[o * inner + i] = j; }
                        }
                        sum[o * inner + i] = (float)acc;
                        absSum[o * inner + i] = accAbs;
                        max[o * inner + i] = best;
                    }
                    var got = t.Sum(d).ToArray<float>();
                    for (int q = 0; q < sum.Length; q++)
                        Assert.True(Math.Abs(got[q] - sum[q]) <= 1e-6 * absSum[q] + 1e-6, $"sum {name} len={len} dim {d} [{q}]: {got[q]} vs {sum[q]}");
                    AssertClose(cum, t.Cumsum(d).ToArray<float>(), $"cumsum {name} len={len} dim {d}", rtol: 1e-5, atol: 1e-5);
                    if (len == 0) continue;
                    var (mv, mi) = t.Max(d);
                    Assert.Equal(max, mv.ToArray<float>());
                    Assert.Equal(arg, mi.ToArray<long>());
                }
            }
            // A float32 sum of n values is within about n·2⁻²⁴·Σ|v| of the exact sum whatever the order (vectorized or, on a
            // CPU without SIMD, one after the other). Assert.Equal(…, precision: 3) rounded both sides and failed on a
            // difference of 3e-5 that straddled a rounding boundary (with DOTNET_EnableHWIntrinsic=0).
            double exact = v.Select(e => (double)e).Sum(), bound = v.Length * 6e-8 * v.Sum(e => Math.Abs((double)e)) + 1e-6;
            double whole = x.Sum().Item();
            Assert.True(Math.Abs(whole - exact) <= bound, $"sum of {v.Length} values: {whole} vs {exact} (bound {bound})");
        }
    }
}
