using Xunit;

namespace Nabla.Tests;

/// <summary>
/// int16, uint16, uint32 and uint64: metadata, creation, views, casts to and from every dtype, promotion, wrapping
/// arithmetic, exact comparisons, reductions, printing, and typed errors for what they do not support. Expected
/// values are computed here with C#'s own integer conversions (the modular rule) or written out by hand.
/// </summary>
public class ExtendedDTypeTests(Xunit.Abstractions.ITestOutputHelper output)
{
    static readonly DType[] New = [DType.Int16, DType.UInt16, DType.UInt32, DType.UInt64];

    [Fact]
    public void MetadataOfTheNewDTypes()
    {
        Assert.Equal([2, 2, 4, 8], New.Select(d => d.ElementSize()));
        Assert.Equal(["torch.int16", "torch.uint16", "torch.uint32", "torch.uint64"], New.Select(d => d.TorchName()));
        Assert.Equal([typeof(short), typeof(ushort), typeof(uint), typeof(ulong)], New.Select(d => d.ClrType()));
        Assert.All(New, d => Assert.True(d.IsIntegral()));
        Assert.All(New, d => Assert.False(d.IsFloatingPoint()));
        Assert.Equal([false, true, true, true], New.Select(d => d.IsUnsigned()));
        Assert.True(DType.UInt8.IsUnsigned());
        Assert.False(DType.Int64.IsUnsigned());
        Assert.Equal(DType.Int16, DTypes.Of<short>());
        Assert.Equal(DType.UInt16, DTypes.Of<ushort>());
        Assert.Equal(DType.UInt32, DTypes.Of<uint>());
        Assert.Equal(DType.UInt64, DTypes.Of<ulong>());
        // Every dtype has a distinct name and a CLR type of its element size.
        var all = Enum.GetValues<DType>();
        Assert.Equal(all.Length, all.Select(d => d.TorchName()).Distinct().Count());
        foreach (var d in all)
            Assert.Equal(d.ElementSize(), d == DType.Bool ? 1 : System.Runtime.InteropServices.Marshal.SizeOf(d.ClrType()));
    }

    [Fact]
    public void CreationAndStorage()
    {
        var a = Tensor.FromArray(new short[] { -32768, -1, 0, 32767 }, 2, 2);
        Assert.Equal(DType.Int16, a.DType);
        Assert.IsType<short[]>(a.Storage.Data);
        Assert.Equal(new short[] { -32768, -1, 0, 32767 }, a.ToArray<short>());
        Assert.Equal(new ushort[6], Tensor.Zeros([2, 3], DType.UInt16).ToArray<ushort>());
        Assert.Equal(Enumerable.Repeat(4294967295u, 3), Tensor.Full([3], 4294967295.0, DType.UInt32).ToArray<uint>());
        Assert.Equal(new ulong[] { 1, 1 }, Tensor.Ones([2], DType.UInt64).ToArray<ulong>());
        Assert.Equal(new ushort[] { 0, 1, 2, 3 }, Tensor.Arange(0, 4, 1, DType.UInt16).ToArray<ushort>());
        Assert.Equal(7.0, Tensor.Scalar(7, DType.UInt64).Item());
        Assert.Equal(new ulong[] { ulong.MaxValue, 0 }, Tensor.FromArray(new ulong[] { ulong.MaxValue, 0 }).ToArray<ulong>());
        var e = Tensor.Zeros([0, 3], DType.UInt32);
        Assert.Equal(0, e.NumElements);
        Assert.Throws<DTypeException>(() => a.ToArray<ushort>());   // element type must match
    }

    [Fact]
    public void ViewsIndexingCatAndCopies()
    {
        var x = Tensor.FromArray(new ushort[] { 0, 1, 2, 3, 4, 5, 65535, 65534, 65533, 9, 10, 11 }, 3, 4);
        var t = x.Transpose(0, 1);
        Assert.Same(x.Storage, t.Storage);
        Assert.Equal(new ushort[] { 0, 4, 65533, 1, 5, 9, 2, 65535, 10, 3, 65534, 11 }, t.Contiguous().ToArray<ushort>());
        Assert.Equal(new ushort[] { 4, 65535 }, x.Select(0, 1).Slice(0, 0, 4, 2).ToArray<ushort>());
        Assert.Equal(new ushort[] { 65533, 9, 10, 11, 0, 1, 2, 3 }, x.IndexSelect(0, Tensor.FromArray(new long[] { 2, 0 })).ToArray<ushort>());
        Assert.Equal(new ushort[] { 1, 65535, 11 }, x.Gather(1, Tensor.FromArray(new long[] { 1, 2, 3 }, 3, 1)).ToArray<ushort>());
        Assert.Equal(new ushort[] { 0, 1, 2, 3, 4, 5 }, x.Reshape(-1).Narrow(0, 0, 6).ToArray<ushort>());

        var big = Tensor.FromArray(new ulong[] { (1UL << 63) + 1, ulong.MaxValue - 1 });
        var cat = Tensor.Cat([big, Tensor.FromArray(new ulong[] { 5 })]);
        Assert.Equal(new ulong[] { (1UL << 63) + 1, ulong.MaxValue - 1, 5 }, cat.ToArray<ulong>());   // exact past 2^53
        Assert.Equal(new ulong[] { 5, ulong.MaxValue - 1 }, cat.IndexSelect(0, Tensor.FromArray(new long[] { 2, 1 })).ToArray<ulong>());
        Assert.Equal(new ulong[] { ulong.MaxValue - 1 }, cat.Gather(0, Tensor.FromArray(new long[] { 1 })).ToArray<ulong>());

        // int16 with int32 concatenates as int32 (promotion).
        var mixed = Tensor.Cat([Tensor.FromArray(new short[] { -1 }), Tensor.FromArray(new[] { 100000 })]);
        Assert.Equal(DType.Int32, mixed.DType);
        Assert.Equal(new[] { -1, 100000 }, mixed.ToArray<int>());

        // Copy_ into a strided view casts and writes only the view.
        var dst = Tensor.Zeros([2, 3], DType.UInt32);
        dst.Select(1, 2).Copy_(Tensor.FromArray(new[] { -1L, 7L }));
        Assert.Equal(new uint[] { 0, 0, uint.MaxValue, 0, 0, 7 }, dst.ToArray<uint>());
        Assert.Equal(1, dst.Storage.Version);
        var clone = dst.Clone();
        Assert.NotSame(dst.Storage, clone.Storage);
        Assert.Equal(dst.ToArray<uint>(), clone.ToArray<uint>());
        dst.Fill_(3);
        Assert.Equal(Enumerable.Repeat(3u, 6), dst.ToArray<uint>());
    }

    /// <summary>Values every dtype holds exactly; casting there and back gives them again.</summary>
    [Fact]
    public void EveryPairOfDTypesConvertsBothWays()
    {
        double[] values = [0, 1, 2, 100, 127];
        foreach (var from in Enum.GetValues<DType>())
        foreach (var to in Enum.GetValues<DType>())
        {
            var src = Tensor.FromArray(values).To(from);
            var vs = from == DType.Bool ? values.Select(v => v != 0 ? 1.0 : 0).ToArray() : values;
            var expected = to == DType.Bool ? vs.Select(v => v != 0 ? 1.0 : 0).ToArray() : vs;
            var there = src.To(to);
            Assert.Equal(to, there.DType);
            Assert.True(expected.SequenceEqual(there.ToDoubleArray()), $"{from} -> {to}: [{string.Join(", ", there.ToDoubleArray())}]");
            Assert.True(expected.SequenceEqual(there.To(from).To(to).ToDoubleArray()), $"{from} -> {to} -> {from} -> {to}");
        }
    }

    [Fact]
    public void ConversionsWrapModularlyAndTruncateTowardZero()
    {
        // Integer to integer: the low bits (C's conversion, which C# spells unchecked).
        Assert.Equal(new ushort[] { unchecked((ushort)(short)-1), unchecked((ushort)(short)-32768) }, Tensor.FromArray(new short[] { -1, -32768 }).To(DType.UInt16).ToArray<ushort>());
        Assert.Equal(new ushort[] { 65535, 32768 }, Tensor.FromArray(new short[] { -1, -32768 }).To(DType.UInt16).ToArray<ushort>());
        Assert.Equal(new short[] { -1, -32768 }, Tensor.FromArray(new ushort[] { 65535, 32768 }).To(DType.Int16).ToArray<short>());
        Assert.Equal(new ushort[] { unchecked((ushort)70000) }, Tensor.FromArray(new[] { 70000 }).To(DType.UInt16).ToArray<ushort>());
        Assert.Equal(new ushort[] { 4464 }, Tensor.FromArray(new[] { 70000 }).To(DType.UInt16).ToArray<ushort>());
        Assert.Equal(new ulong[] { ulong.MaxValue }, Tensor.FromArray(new[] { -1L }).To(DType.UInt64).ToArray<ulong>());
        Assert.Equal(new long[] { long.MinValue + 1 }, Tensor.FromArray(new[] { (1UL << 63) + 1 }).To(DType.Int64).ToArray<long>());
        Assert.Equal(new uint[] { 0xFFFF_FFFF }, Tensor.FromArray(new[] { 0x1_FFFF_FFFFUL }).To(DType.UInt32).ToArray<uint>());
        Assert.Equal(new sbyte[] { -1 }, Tensor.FromArray(new ushort[] { 0xFFFF }).To(DType.Int8).ToArray<sbyte>());
        Assert.Equal(new[] { true, false }, Tensor.FromArray(new ulong[] { 1UL << 40, 0 }).To(DType.Bool).ToArray<bool>());
        Assert.Equal(new ulong[] { 1, 0 }, Tensor.FromArray(new[] { true, false }).To(DType.UInt64).ToArray<ulong>());

        // To floats: the nearest value of the target type.
        Assert.Equal(new float[] { 65535f }, Tensor.FromArray(new ushort[] { 65535 }).To(DType.Float32).ToArray<float>());
        Assert.Equal(new double[] { 4294967295.0 }, Tensor.FromArray(new uint[] { uint.MaxValue }).To(DType.Float64).ToArray<double>());
        Assert.Equal(new double[] { 18446744073709551615.0 }, Tensor.FromArray(new ulong[] { ulong.MaxValue }).To(DType.Float64).ToArray<double>());
        Assert.Equal(new[] { (Half)(float)ushort.MaxValue }, Tensor.FromArray(new ushort[] { 65535 }).To(DType.Float16).ToArray<Half>());
        Assert.True(Half.IsPositiveInfinity(Tensor.FromArray(new ushort[] { 65535 }).To(DType.Float16).ToArray<Half>()[0]));   // above float16's max
        Assert.Equal(65536f, (float)Tensor.FromArray(new ushort[] { 65535 }).To(DType.BFloat16).ToArray<BFloat16>()[0]);
        Assert.Equal(new float[] { -32768f }, Tensor.FromArray(new short[] { -32768 }).To(DType.Float32).ToArray<float>());

        // From floats: truncation toward zero, then the modular rule (-1.5 → -1 → 65535, as torch gives for uint8).
        var f = Tensor.FromArray(new float[] { 3.7f, -1.5f, 65536f, -0.5f });
        Assert.Equal(new ushort[] { 3, 65535, 0, 0 }, f.To(DType.UInt16).ToArray<ushort>());
        Assert.Equal(new short[] { 3, -1, 0, 0 }, f.To(DType.Int16).ToArray<short>());
        Assert.Equal(new uint[] { 3, uint.MaxValue, 65536, 0 }, f.To(DType.UInt32).ToArray<uint>());
        Assert.Equal(new ulong[] { 3, ulong.MaxValue, 65536, 0 }, f.To(DType.UInt64).ToArray<ulong>());
        Assert.Equal(new ulong[] { 1UL << 63, 3UL << 62 }, Tensor.FromArray(new double[] { 9223372036854775808.0, 13835058055282163712.0 }).To(DType.UInt64).ToArray<ulong>());
    }

    [Fact]
    public void PromotionTable()
    {
        static DType P(DType a, DType b) => Tensor.Zeros([1], a).Add(Tensor.Zeros([1], b)).DType;
        // int16 as in PyTorch.
        Assert.Equal(DType.Int32, P(DType.Int16, DType.Int32));
        Assert.Equal(DType.Int16, P(DType.Int16, DType.Int8));
        Assert.Equal(DType.Int16, P(DType.UInt8, DType.Int16));
        Assert.Equal(DType.Int16, P(DType.UInt8, DType.Int8));
        Assert.Equal(DType.Float32, P(DType.Int16, DType.Float32));
        Assert.Equal(DType.Float16, P(DType.Int16, DType.Float16));
        Assert.Equal(DType.Int16, P(DType.Bool, DType.Int16));
        // unsigned with signed: the smallest signed type holding both (NumPy); uint64 with signed gives float64.
        Assert.Equal(DType.Int32, P(DType.UInt16, DType.Int16));
        Assert.Equal(DType.Int64, P(DType.UInt32, DType.Int32));
        Assert.Equal(DType.Int64, P(DType.UInt32, DType.Int8));
        Assert.Equal(DType.Int32, P(DType.UInt16, DType.Int32));
        Assert.Equal(DType.Int64, P(DType.UInt16, DType.Int64));
        Assert.Equal(DType.Float64, P(DType.UInt64, DType.Int64));
        Assert.Equal(DType.Float64, P(DType.Int8, DType.UInt64));
        // unsigned with unsigned: the wider.
        Assert.Equal(DType.UInt16, P(DType.UInt8, DType.UInt16));
        Assert.Equal(DType.UInt64, P(DType.UInt32, DType.UInt64));
        Assert.Equal(DType.UInt32, P(DType.Bool, DType.UInt32));
        // floats win (PyTorch's category rule).
        Assert.Equal(DType.Float32, P(DType.UInt64, DType.Float32));
        Assert.Equal(DType.BFloat16, P(DType.UInt32, DType.BFloat16));
        // The table is symmetric.
        foreach (var a in Enum.GetValues<DType>())
        foreach (var b in Enum.GetValues<DType>())
            Assert.Equal(DTypes.Promote(a, b), DTypes.Promote(b, a));
        // C# scalars and 0-d tensors keep the tensor's integer type.
        Assert.Equal(DType.UInt16, Tensor.Zeros([2], DType.UInt16).Add(3).DType);
        Assert.Equal(DType.Int16, Tensor.Zeros([2], DType.Int16).Add(Tensor.Scalar(3, DType.Int64)).DType);
        Assert.Equal(DType.Float32, Tensor.Zeros([2], DType.UInt32).Add(0.5).DType);
    }

    [Fact]
    public void ArithmeticWrapsAroundLikeCIntegers()
    {
        var u16 = Tensor.FromArray(new ushort[] { 65535, 0, 300 });
        Assert.Equal(new ushort[] { 0, 1, 301 }, u16.Add(1).ToArray<ushort>());
        Assert.Equal(new ushort[] { 65534, 65535, 299 }, u16.Sub(1).ToArray<ushort>());
        Assert.Equal(new ushort[] { unchecked((ushort)(65535 * 300)), 0, unchecked((ushort)(300 * 300)) }, u16.Mul(Tensor.FromArray(new ushort[] { 300, 5, 300 })).ToArray<ushort>());
        Assert.Equal(new ushort[] { 1, 0, 65236 }, u16.Neg().ToArray<ushort>());
        var i16 = Tensor.FromArray(new short[] { 32767, -32768, -5 });
        Assert.Equal(new short[] { -32768, -32767, -4 }, i16.Add(1).ToArray<short>());
        Assert.Equal(new short[] { 32767, -32768, 5 }, i16.Abs().ToArray<short>());   // |-32768| wraps to itself, as in C and torch
        var u32 = Tensor.FromArray(new uint[] { uint.MaxValue, 7 });
        Assert.Equal(new uint[] { 0, 8 }, u32.Add(1).ToArray<uint>());
        var u64 = Tensor.FromArray(new ulong[] { ulong.MaxValue, (1UL << 63) + 5 });
        Assert.Equal(new ulong[] { 0, (1UL << 63) + 6 }, u64.Add(Tensor.FromArray(new ulong[] { 1 })).ToArray<ulong>());
        Assert.Equal(new ulong[] { ulong.MaxValue - 3, (1UL << 63) + 2 }, u64.Sub(Tensor.FromArray(new ulong[] { 3 })).ToArray<ulong>());   // exact past 2^53
        Assert.Equal(new ulong[] { ulong.MaxValue, (1UL << 63) + 5 }, u64.Maximum(Tensor.FromArray(new ulong[] { 1UL << 63 })).ToArray<ulong>());
        Assert.Equal(new ulong[] { 1UL << 63, 1UL << 63 }, u64.Minimum(Tensor.FromArray(new ulong[] { 1UL << 63 })).ToArray<ulong>());
        // True division gives float32; mixed types promote first.
        var q = Tensor.FromArray(new ushort[] { 7, 65535 }).Div(Tensor.FromArray(new ushort[] { 2, 1 }));
        Assert.Equal(DType.Float32, q.DType);
        Assert.Equal(new float[] { 3.5f, 65535f }, q.ToArray<float>());
        var mixed = Tensor.FromArray(new ushort[] { 65535 }).Add(Tensor.FromArray(new short[] { -1 }));
        Assert.Equal(DType.Int32, mixed.DType);
        Assert.Equal(new[] { 65534 }, mixed.ToArray<int>());
        var wide = Tensor.FromArray(new uint[] { uint.MaxValue }).Add(Tensor.FromArray(new[] { 1 }));
        Assert.Equal(new[] { 4294967296L }, wide.ToArray<long>());
        // In place keeps the dtype and wraps.
        var inplace = Tensor.FromArray(new ushort[] { 65535 });
        inplace.Add_(Tensor.FromArray(new ushort[] { 2 }));
        Assert.Equal(new ushort[] { 1 }, inplace.ToArray<ushort>());
        // Float math promotes to float32.
        Assert.Equal(DType.Float32, Tensor.FromArray(new uint[] { 4 }).Sqrt().DType);
        Assert.Equal(new float[] { 2f }, Tensor.FromArray(new uint[] { 4 }).Sqrt().ToArray<float>());
    }

    [Fact]
    public void ComparisonsAreExactPastTwoToThe53()
    {
        ulong top = ulong.MaxValue, below = ulong.MaxValue - 1;   // equal as doubles
        Assert.Equal((double)top, (double)below);
        var a = Tensor.FromArray(new[] { top, below, 5UL });
        var b = Tensor.FromArray(new[] { below, top, 5UL });
        Assert.Equal(new[] { true, false, false }, a.Gt(b).ToArray<bool>());
        Assert.Equal(new[] { false, true, false }, a.Lt(b).ToArray<bool>());
        Assert.Equal(new[] { false, false, true }, a.Eq(b).ToArray<bool>());
        Assert.Equal(new[] { true, true, false }, a.Ne(b).ToArray<bool>());
        Assert.Equal(new[] { true, false, true }, a.Ge(b).ToArray<bool>());
        Assert.Equal(new[] { false, true, true }, a.Le(b).ToArray<bool>());
        var s = Tensor.FromArray(new short[] { -3, 0, 3 });
        Assert.Equal(new[] { true, false, false }, s.Lt(0.0).ToArray<bool>());
        Assert.Equal(new short[] { 0, 0, 3 }, Tensor.Where(s.Gt(0.0), s, Tensor.Zeros([3], DType.Int16)).ToArray<short>());
        Assert.Equal(new short[] { -3, 9, 3 }, s.MaskedFill(s.Eq(0.0), 9).ToArray<short>());
        // uint16 against int16 compares in int32, so 65535 > -1.
        Assert.Equal(new[] { true }, Tensor.FromArray(new ushort[] { 65535 }).Gt(Tensor.FromArray(new short[] { -1 })).ToArray<bool>());
    }

    [Fact]
    public void Reductions()
    {
        var s = Tensor.FromArray(new short[] { 30000, 30000, -5 });
        Assert.Equal(DType.Int64, s.Sum().DType);   // integer sums go to int64, as in torch
        Assert.Equal(59995.0, s.Sum().Item());
        var u = Tensor.FromArray(new ulong[] { ulong.MaxValue, 2 });
        Assert.Equal(DType.UInt64, u.Sum().DType);
        Assert.Equal(new ulong[] { 1 }, u.Sum().Reshape(1).ToArray<ulong>());   // modulo 2^64
        Assert.Equal(new ulong[] { ulong.MaxValue, 1 }, u.Cumsum(0).ToArray<ulong>());
        var m = Tensor.FromArray(new uint[] { 4, uint.MaxValue, 9, 1 }, 2, 2);
        var (vals, idx) = m.Max(1);
        Assert.Equal(new uint[] { uint.MaxValue, 9 }, vals.ToArray<uint>());
        Assert.Equal(new long[] { 1, 0 }, idx.ToArray<long>());
        Assert.Equal(new uint[] { 1 }, m.Min().Reshape(1).ToArray<uint>());
        Assert.Equal(new long[] { 1 }, Tensor.FromArray(new ushort[] { 3, 65535, 7 }).Argmax().Reshape(1).ToArray<long>());
        Assert.Equal(DType.Float32, Tensor.FromArray(new ushort[] { 1, 2 }).Mean().DType);
        Assert.Equal(1.5, Tensor.FromArray(new ushort[] { 1, 2 }).Mean().Item());
        var (sorted, _) = Tensor.FromArray(new ushort[] { 9, 65535, 0 }).Sort();
        Assert.Equal(new ushort[] { 0, 9, 65535 }, sorted.ToArray<ushort>());
        // Neighbours above 2^53 sort exactly (as doubles they tie and would keep their input order).
        var (big, order) = Tensor.FromArray(new[] { ulong.MaxValue, ulong.MaxValue - 1, 1UL << 63 }).Sort(descending: false);
        Assert.Equal(new[] { 1UL << 63, ulong.MaxValue - 1, ulong.MaxValue }, big.ToArray<ulong>());
        Assert.Equal(new long[] { 2, 1, 0 }, order.ToArray<long>());
        var (top, _) = Tensor.FromArray(new[] { (1L << 53) + 1, 1L << 53, -5 }).Topk(2);
        Assert.Equal(new[] { (1L << 53) + 1, 1L << 53 }, top.ToArray<long>());
    }

    [Fact]
    public void PrintsExactValuesWithTheDTypeName()
    {
        Assert.Equal("tensor([                   0, 18446744073709551615], dtype=torch.uint64)",
            Tensor.FromArray(new ulong[] { 0, ulong.MaxValue }).ToString());
        Assert.Equal("tensor([-32768,      1], dtype=torch.int16)", Tensor.FromArray(new short[] { -32768, 1 }).ToString());
        Assert.Equal("tensor([[    0, 65535]], dtype=torch.uint16)", Tensor.FromArray(new ushort[] { 0, 65535 }, 1, 2).ToString());
        Assert.Equal("tensor(7, dtype=torch.uint32)", Tensor.Scalar(7, DType.UInt32).ToString());
        // Above 2^53, next to its neighbour: a double would print both as ...616.
        Assert.Equal("tensor([9007199254740993, 9007199254740992], dtype=torch.uint64)",
            Tensor.FromArray(new ulong[] { (1UL << 53) + 1, 1UL << 53 }).ToString());
        Assert.Equal("tensor([9007199254740993])", Tensor.FromArray(new long[] { (1L << 53) + 1 }).ToString());
    }

    public static TheoryData<DType> NewDTypes() => [DType.Int16, DType.UInt16, DType.UInt32, DType.UInt64];

    /// <summary>
    /// A sweep of everyday ops over each new dtype: each either gives a result of the right shape or throws a
    /// NablaException; never an InvalidCastException, a NullReferenceException or another crash.
    /// </summary>
    [Theory]
    [MemberData(nameof(NewDTypes))]
    public void EveryOpWorksOrThrowsATypedError(DType dt)
    {
        var x = Tensor.Arange(0, 24, 1, dt).Reshape(1, 2, 3, 4);
        var w = Tensor.Ones([2, 2, 2, 2], dt);
        var idx = Tensor.FromArray(new long[] { 1, 0 });
        var ops = new (string name, Func<Tensor> run)[]
        {
            ("conv2d", () => Functional.Conv2d(x, w, null, 1)),
            ("max_pool2d", () => Functional.MaxPool2d(x, 2)),
            ("avg_pool2d", () => Functional.AvgPool2d(x, 2)),
            ("adaptive_avg_pool2d", () => Functional.AdaptiveAvgPool2d(x, (1, 1))),
            ("softmax", () => Functional.Softmax(x, -1)),
            ("log_softmax", () => Functional.LogSoftmax(x, -1)),
            ("linear", () => Functional.Linear(x.Reshape(6, 4), Tensor.Ones([3, 4], dt))),
            ("layer_norm", () => Functional.LayerNorm(x, [4])),
            ("pad", () => Functional.Pad(x, [1, 1])),
            ("embedding", () => Functional.Embedding(Tensor.FromArray(new long[] { 0, 2 }), x.Reshape(6, 4))),
            ("relu", () => x.Relu()),
            ("exp", () => x.Exp()),
            ("prod", () => x.Prod()),
            ("var", () => x.Var()),
            ("norm", () => x.Norm()),
            ("flip", () => x.Flip(3)),
            ("index_add", () => x.Reshape(6, 4).IndexAdd(0, idx, Tensor.Ones([2, 4], dt))),
            ("scatter_add", () => x.Reshape(6, 4).ScatterAdd(0, Tensor.FromArray(new long[] { 1, 0, 2, 3 }, 1, 4), Tensor.Ones([1, 4], dt))),
            ("masked_select", () => x.MaskedSelect(x.Gt(10.0))),
            ("clamp", () => x.Clamp(2, 9)),
            ("pow", () => x.Pow(3.0)),
            ("where_mixed", () => Tensor.Where(x.Gt(5.0), x, Tensor.Zeros([1], DType.Float32))),
            ("cumsum", () => x.Cumsum(3)),
            ("all", () => x.All()),
            ("matmul", () => x.Reshape(6, 4).Matmul(x.Reshape(4, 6))),
        };
        foreach (var (name, run) in ops)
        {
            try
            {
                var r = run();
                Assert.True(r.NumElements >= 0);
                _ = r.ToDoubleArray();
                output.WriteLine($"{name}: {r.DType.TorchName()} {string.Join("x", r.Shape)}");
            }
            catch (NablaException e)
            {
                Assert.False(string.IsNullOrWhiteSpace(e.Message), name);
                output.WriteLine($"{name}: {e.GetType().Name}: {e.Message}");
            }
            catch (Exception e)
            {
                Assert.Fail($"{name} on {dt.TorchName()} threw {e.GetType().Name}: {e.Message}");
            }
        }
        // Spot checks of values that must come out right.
        Assert.Equal(new double[] { 0, 1, 2, 3, 4, 5, 6, 7, 8, 9 }, x.Reshape(-1).Slice(0, 0, 10).ToDoubleArray());
        Assert.Equal(new double[] { 5, 7, 17, 19 }, Functional.MaxPool2d(x, 2).ToDoubleArray());   // 2×2 windows of each 3×4 plane
        Assert.Equal(new double[] { 4, 5, 6, 7, 0, 1, 2, 3 }, x.Reshape(6, 4).IndexSelect(0, idx).ToDoubleArray());
    }

    [Fact]
    public void UnsupportedOperationsThrowTypedErrorsNamingOpAndDType()
    {
        var a = Tensor.FromArray(new ulong[] { 1, 2, 3, 4 }, 2, 2);
        var e = Assert.Throws<DTypeException>(() => a.Matmul(a));
        Assert.Contains("matmul", e.Message);
        Assert.Contains("torch.uint64", e.Message);
        var c = Assert.Throws<DTypeException>(() => Functional.Conv2d(Tensor.Ones([1, 1, 3, 3], DType.Int16), Tensor.Ones([1, 1, 2, 2], DType.Int16), null, 1));
        Assert.Contains("conv2d", c.Message);
        Assert.Contains("torch.int16", c.Message);
        var l = Assert.Throws<DTypeException>(() => Functional.Linear(Tensor.Ones([2, 3], DType.UInt32), Tensor.Ones([4, 3], DType.UInt32)));
        Assert.Contains("linear", l.Message);
        Assert.Contains("torch.uint32", l.Message);
        var g = Assert.Throws<AutogradException>(() => Tensor.Zeros([2], DType.Int16).RequiresGrad_());
        Assert.Contains("torch.int16", g.Message);
        var n = Assert.Throws<DTypeException>(() => Tensor.Normal([2], 0, 1, DType.UInt16));
        Assert.Contains("torch.uint16", n.Message);
    }
}
