using Xunit;

namespace Nabla.Tests;

/// <summary>Creation, random streams, dtypes and PyTorch's promotion rules, views sharing storage, and printing.</summary>
public class TensorBasicsTests
{
    [Fact]
    public void ConstantCreation()
    {
        var z = Tensor.Zeros(2, 3);
        Assert.Equal([2, 3], z.Shape);
        Assert.Equal(DType.Float32, z.DType);
        Assert.All(z.ToArray<float>(), v => Assert.Equal(0f, v));
        Assert.All(Tensor.Ones([4], DType.Int32).ToArray<int>(), v => Assert.Equal(1, v));
        Assert.Equal(new double[] { 2.5, 2.5 }, Tensor.Full([2], 2.5, DType.Float64).ToArray<double>());
        Assert.Equal([], Tensor.Scalar(7).Shape);
        Assert.Equal(7.0, Tensor.Scalar(7).Item());
        Assert.Equal(0, Tensor.Zeros(0, 3).NumElements);
        Assert.Equal(new float[] { 1, 0, 0, 0, 1, 0 }, Tensor.Eye(2, 3).ToArray<float>());
        Assert.Equal(new long[] { 1, 0, 0, 1 }, Tensor.Eye(2, dtype: DType.Int64).ToArray<long>());
        Assert.Equal(new float[] { 1, 2, 3, 4 }, Tensor.FromArray(new float[,] { { 1, 2 }, { 3, 4 } }).ToArray<float>());
    }

    [Fact]
    public void ArangeAndLinspace()
    {
        var a = Tensor.Arange(5);
        Assert.Equal(DType.Int64, a.DType);   // integral arguments give int64, as torch.arange
        Assert.Equal(new long[] { 0, 1, 2, 3, 4 }, a.ToArray<long>());
        Assert.Equal(new long[] { 2, 5, 8 }, Tensor.Arange(2, 10, 3).ToArray<long>());
        Assert.Equal(new long[] { 5, 3, 1 }, Tensor.Arange(5, 0, -2).ToArray<long>());
        var f = Tensor.Arange(0, 1, 0.25);
        Assert.Equal(DType.Float32, f.DType);
        Assert.Equal(new float[] { 0, 0.25f, 0.5f, 0.75f }, f.ToArray<float>());
        Assert.Equal(DType.Float64, Tensor.Arange(0, 3, 1, DType.Float64).DType);
        Assert.Equal(new float[] { 0, 0.25f, 0.5f, 0.75f, 1 }, Tensor.Linspace(0, 1, 5).ToArray<float>());
        Assert.Equal(new double[] { -1, 0.5, 2 }, Tensor.Linspace(-1, 2, 3, DType.Float64).ToArray<double>());
        Assert.Equal(new float[] { 3 }, Tensor.Linspace(3, 9, 1).ToArray<float>());
        Assert.Empty(Tensor.Linspace(0, 1, 0).ToArray<float>());
        // The last value is exactly `end` even where start + step·(n-1) would round differently.
        Assert.Equal(0.3, Tensor.Linspace(0.1, 0.3, 7, DType.Float64).ToArray<double>()[^1]);
    }

    [Fact]
    public void RandomStreamsAreReproducibleAndPinned()
    {
        var a = Tensor.Rand([1000], DType.Float32, new Generator(42)).ToArray<float>();
        var b = Tensor.Rand([1000], DType.Float32, new Generator(42)).ToArray<float>();
        Assert.Equal(a, b);
        // Pinned: xoshiro256** seeded through SplitMix64 (values from an independent implementation), so a change
        // of the stream is noticed. float32 samples are the top 24 bits of each 64-bit output.
        Assert.Equal(0.08386296033859253f, a[0]);
        Assert.Equal(0.37898021936416626f, a[1]);
        Assert.Equal(0.6800433993339539f, a[2]);
        Assert.Equal(0x15780b2e0c2ec716UL, new Generator(42).NextUInt64());
        Assert.NotEqual(a, Tensor.Rand([1000], DType.Float32, new Generator(43)).ToArray<float>());
        Assert.All(a, v => Assert.True(v >= 0f && v < 1f));

        // Reseeding and saved state resume the exact stream.
        var g = new Generator(7);
        var first = Tensor.Randn([5], DType.Float64, g).ToArray<double>();
        var state = g.GetState();
        var next = Tensor.Randn([3], DType.Float64, g).ToArray<double>();
        g.SetState(state);
        Assert.Equal(next, Tensor.Randn([3], DType.Float64, g).ToArray<double>());
        g.ManualSeed(7);
        Assert.Equal(first, Tensor.Randn([5], DType.Float64, g).ToArray<double>());
    }

    [Fact]
    public void RandnRandintBernoulliStatistics()
    {
        var g = new Generator(3);
        var n = Tensor.Randn([20000], DType.Float64, g);
        Assert.InRange(n.Mean().Item(), -0.03, 0.03);       // σ/√n ≈ 0.007
        Assert.InRange(n.Var().Item(), 0.96, 1.04);
        var nf = Tensor.Normal([20000], 5, 2, DType.Float32, g);
        Assert.InRange(nf.Mean().Item(), 4.94, 5.06);
        Assert.InRange(nf.Std().Item(), 1.94, 2.06);

        var r = Tensor.Randint(-3, 4, [5000], generator: g);
        Assert.Equal(DType.Int64, r.DType);
        var vals = r.ToArray<long>();
        Assert.All(vals, v => Assert.InRange(v, -3, 3));
        Assert.Equal(7, vals.Distinct().Count());   // every value in [-3, 4) occurs
        Assert.Equal(DType.Int32, Tensor.Randint(0, 2, [3], DType.Int32, g).DType);

        var p = Tensor.Bernoulli([20000], 0.3, g);
        Assert.All(p.ToArray<float>(), v => Assert.True(v is 0f or 1f));
        Assert.InRange(p.Mean().Item(), 0.28, 0.32);
        Assert.All(Tensor.Full([100], 0.0).Bernoulli(g).ToArray<float>(), v => Assert.Equal(0f, v));
        Assert.All(Tensor.Full([100], 1.0).Bernoulli(g).ToArray<float>(), v => Assert.Equal(1f, v));
        Assert.Equal(DType.Float64, Tensor.Full([2], 0.5, DType.Float64).Bernoulli(g).DType);
    }

    static Tensor T(DType dt, params double[] v)
    {
        var t = Tensor.Zeros([v.Length], dt);
        for (int i = 0; i < v.Length; i++) Cpu.WriteFromDouble(t.Storage, i, v[i]);
        return t;
    }

    [Fact]
    public void PromotionFollowsPyTorch()
    {
        Assert.Equal(DType.Int64, T(DType.Int32, 1).Add(T(DType.Int64, 2)).DType);
        Assert.Equal(DType.Float32, T(DType.Int64, 1).Add(2.5).DType);            // int tensor + float scalar → default float
        Assert.Equal(DType.Float32, T(DType.Int32, 1).Mul(0.5).DType);
        Assert.Equal(DType.Float32, T(DType.Float16, 1).Add(T(DType.BFloat16, 2)).DType);
        Assert.Equal(DType.Float64, T(DType.Float32, 1).Add(T(DType.Float64, 2)).DType);
        Assert.Equal(DType.Float16, T(DType.Float16, 1).Add(2.5).DType);          // a scalar never widens a float
        Assert.Equal(DType.Float32, T(DType.Int64, 1).Add(T(DType.Float32, 2)).DType);
        Assert.Equal(DType.Int64, T(DType.Bool, 1).Add(T(DType.Int64, 2)).DType);
        Assert.Equal(DType.Float32, T(DType.Int32, 3).Div(T(DType.Int32, 2)).DType); // true division
        Assert.Equal(new float[] { 1.5f }, T(DType.Int32, 3).Div(T(DType.Int32, 2)).ToArray<float>());
        // uint8 + int8 gives int16, as in PyTorch.
        Assert.Equal(DType.Int16, T(DType.UInt8, 200).Add(T(DType.Int8, -100)).DType);
        Assert.Equal(new short[] { 100 }, T(DType.UInt8, 200).Add(T(DType.Int8, -100)).ToArray<short>());
        // 0-d tensors do not widen dimensioned operands of the same category.
        Assert.Equal(DType.Float32, T(DType.Float32, 1).Add(Tensor.Scalar(2, DType.Float64)).DType);
        Assert.Equal(DType.Int32, T(DType.Int32, 1).Add(Tensor.Scalar(2, DType.Int64)).DType);
        Assert.Equal(DType.UInt8, T(DType.UInt8, 1).Add(Tensor.Scalar(2, DType.Int64)).DType);
        // ...but a 0-d tensor of a higher category sets the result (PyTorch: int32 tensor + float64 0-d → float64).
        Assert.Equal(DType.Float64, T(DType.Int32, 1).Add(Tensor.Scalar(2, DType.Float64)).DType);
        Assert.Equal(DType.Float64, Tensor.Scalar(1, DType.Float32).Add(Tensor.Scalar(2, DType.Float64)).DType);
        // NOTE: C# scalars are doubles, so an integral value such as 2.0 keeps an integer tensor integral.
        Assert.Equal(DType.Int64, T(DType.Int64, 1).Add(2.0).DType);
        Assert.Equal(DType.Bool, T(DType.Float32, 1).Gt(0.0).DType);
        Assert.Equal(new byte[] { 255 }, T(DType.UInt8, 250).Add(5).ToArray<byte>());
        Assert.Equal(new byte[] { 4 }, T(DType.UInt8, 250).Add(10).ToArray<byte>());   // wraps like PyTorch
    }

    [Fact]
    public void DTypeConversions()
    {
        var x = Tensor.FromArray(new float[] { 1.7f, -2.5f, 65504f, 1e-8f });
        Assert.Equal(new long[] { 1, -2, 65504, 0 }, x.Long().ToArray<long>());   // truncation toward zero
        Assert.Equal(new Half[] { (Half)1.7f, (Half)(-2.5f), (Half)65504f, (Half)1e-8f }, x.To(DType.Float16).ToArray<Half>());
        Assert.Equal(1.703125f, (float)x.To(DType.BFloat16).ToArray<BFloat16>()[0]);     // 0x3FD9_999A rounds up to 0x3FDA
        Assert.Equal(new[] { true, true, true, true }, x.To(DType.Bool).ToArray<bool>());
        Assert.Equal(new float[] { 1.5f }, Tensor.FromArray(new Half[] { (Half)1.5f }).Float().ToArray<float>());
        Assert.Equal(4, DType.Float32.ElementSize());
        Assert.Equal(2, DType.BFloat16.ElementSize());
        Assert.True(DType.Float16.IsFloatingPoint());
        Assert.False(DType.Bool.IsIntegral());
        Assert.Equal("torch.bfloat16", DType.BFloat16.TorchName());
    }

    [Fact]
    public void AsTensorSharesTheArrayAndFromArrayCopiesIt()
    {
        // Large enough (400 KB) that a storage Nabla allocated would be recyclable: AsTensor's must not be.
        var data = new float[100_000];
        data[7] = 3f;
        var shared = Tensor.AsTensor(data, 1000, 100);
        var copied = Tensor.FromArray(data, 1000, 100);
        var spanned = Tensor.FromSpan<float>(data, 1000, 100);
        Assert.Equal([1000, 100], shared.Shape);
        data[7] = 5f;                                  // the caller's write shows in the shared tensor only
        Assert.Equal(5f, shared.ToArray<float>()[7]);
        Assert.Equal(3f, copied.ToArray<float>()[7]);
        Assert.Equal(3f, spanned.ToArray<float>()[7]);
        shared.Fill_(2f);                              // and the tensor's writes show in the array
        Assert.Equal(2f, data[99_999]);
        shared.Dispose();                              // the array stays the caller's: nothing recycles it
        using (Tensor.NewDisposeScope())
            for (int i = 0; i < 4; i++) Tensor.Zeros(1000, 100).Add_(Tensor.Ones(1000, 100));
        Assert.All(data, v => Assert.Equal(2f, v));
        Assert.Equal([4], Tensor.AsTensor(new long[] { 1, 2, 3, 4 }).Shape);
        var e = Assert.Throws<ShapeMismatchException>(() => Tensor.AsTensor(new float[6], 4, 2));
        Assert.Contains("6 values do not fill shape [4, 2]", e.Message);
    }

    [Fact]
    public void BytesRoundTripAndReadingThemKeepsNoOwner()
    {
        var values = Enumerable.Range(0, 30_000).Select(i => (float)i).ToArray();
        var t = Tensor.FromBytes(System.Runtime.InteropServices.MemoryMarshal.AsBytes(values.AsSpan()), DType.Float32, [100, 300]);   // 120 KB: recyclable, one owner
        var bytes = t.ToBytes();
        Assert.Equal(t.ToArray<float>(), Tensor.FromBytes(bytes, DType.Float32, [100, 300]).ToArray<float>());
        var tt = t.T;                                                            // not contiguous: read through a copy
        Assert.Equal(tt.Contiguous().ToArray<float>(), Tensor.FromBytes(tt.ToBytes(), DType.Float32, [300, 100]).ToArray<float>());
        tt.Dispose();
        t.Dispose();
        Assert.True(t.Storage.IsDisposed);                                       // neither ToBytes left an owner behind
        var scalar = Tensor.FromBytes(BitConverter.GetBytes(2.5f), DType.Float32, []);
        Assert.Equal(0, scalar.Dim);
        Assert.Equal(2.5, scalar.Item());
        var e = Assert.Throws<ShapeMismatchException>(() => Tensor.FromBytes(new byte[7], DType.Float32, [2]));
        Assert.Contains("7 bytes do not fill shape [2]", e.Message);
    }

    [Fact]
    public void ViewsShareStorage()
    {
        var x = Tensor.Arange(0, 12, 1, DType.Float32).Reshape(3, 4);
        var t = x.T;
        Assert.Same(x.Storage, t.Storage);
        Assert.False(t.IsContiguous);
        t.Select(0, 1).Fill_(-1);                  // column 1 of x
        Assert.Equal(new float[] { 0, -1, 2, 3, 4, -1, 6, 7, 8, -1, 10, 11 }, x.ToArray<float>());
        x.Slice(1, 0, 4, 2).Slice(0, 1, 3).Fill_(9);   // rows 1..2, even columns
        Assert.Equal(new float[] { 0, -1, 2, 3, 9, -1, 9, 7, 9, -1, 9, 11 }, x.ToArray<float>());
        var r = x.Reshape(2, 6);
        Assert.Same(x.Storage, r.Storage);
        r.Narrow(1, 5, 1).Copy_(Tensor.FromArray(new float[] { 50, 51 }, 2, 1));
        Assert.Equal(50f, x.ToArray<float>()[5]);
        Assert.Equal(51f, x.ToArray<float>()[11]);
        var e = x.Select(0, 0).Unsqueeze(0).Expand(5, 4);
        Assert.Same(x.Storage, e.Storage);
        Assert.Equal([0, 1], e.Strides);
        x.Select(0, 0).Zero_();
        Assert.All(e.ToArray<float>(), v => Assert.Equal(0f, v));
        // Copies share nothing.
        var c = x.Clone();
        var tc = t.Contiguous();
        Assert.NotSame(x.Storage, c.Storage);
        Assert.NotSame(x.Storage, tc.Storage);
        Assert.Same(x, x.Contiguous());
        c.Fill_(100);
        Assert.NotEqual(100f, x.ToArray<float>()[0]);
        // Every in-place write through any view bumps the shared version counter.
        int v0 = x.Storage.Version;
        t.Slice(0, 0, 1).Mul_(2.0);
        Assert.Equal(v0 + 1, x.Storage.Version);
    }

    [Fact]
    public void ToStringMatchesPyTorch()
    {
        Assert.Equal("tensor([1., 2.])", Tensor.FromArray(new float[] { 1, 2 }).ToString());
        Assert.Equal("tensor([ 1.5000, -2.2500])", Tensor.FromArray(new float[] { 1.5f, -2.25f }).ToString());
        Assert.Equal("tensor(3.5000)", Tensor.Scalar(3.5).ToString());
        Assert.Equal("tensor([[1.0000, 2.5000],\n        [3.0000, 4.0000]])", Tensor.FromArray(new float[] { 1, 2.5f, 3, 4 }, 2, 2).ToString());
        Assert.Equal("tensor([1.0000e-05, 1.0000e+00])", Tensor.FromArray(new float[] { 1e-5f, 1 }).ToString());
        Assert.Equal("tensor([1.0000e+00, 1.0000e+04])", Tensor.FromArray(new float[] { 1, 10000 }).ToString());
        Assert.Equal("tensor([1.0000e+09, 2.0000e+00])", Tensor.FromArray(new double[] { 1e9, 2 }).Float().ToString());
        Assert.Equal("tensor([  1, -20, 300])", Tensor.FromArray(new long[] { 1, -20, 300 }).ToString());
        Assert.Equal("tensor([1, 2], dtype=torch.int32)", Tensor.FromArray(new[] { 1, 2 }).ToString());
        Assert.Equal("tensor([ True, False])", Tensor.FromArray(new[] { true, false }).ToString());
        Assert.Equal("tensor([1.0000, 2.5000], dtype=torch.float64)", Tensor.FromArray(new double[] { 1, 2.5 }).ToString());
        Assert.Equal("tensor([1., 2.], requires_grad=True)", Tensor.FromArray(new float[] { 1, 2 }).RequiresGrad_().ToString());
        Assert.Equal("tensor([1., nan, inf])", Tensor.FromArray(new float[] { 1, float.NaN, float.PositiveInfinity }).ToString());
        Assert.Equal("tensor([   nan, 1.5000])", Tensor.FromArray(new float[] { float.NaN, 1.5f }).ToString());
        Assert.Equal("tensor([0., 0.])", Tensor.Zeros(2).ToString());
        Assert.Equal("tensor([])", Tensor.Zeros(0).ToString());
        Assert.Equal("tensor([0.0000e+00, 1.0000e+00, 2.0000e+00,  ..., 1.9970e+03, 1.9980e+03, 1.9990e+03])",
            Tensor.Arange(0, 2000, 1, DType.Float32).ToString());
        Assert.Equal("tensor([   0,    1,    2,  ..., 1997, 1998, 1999])", Tensor.Arange(2000).ToString());
    }
}
