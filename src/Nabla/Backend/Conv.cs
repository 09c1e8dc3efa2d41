using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Nabla;

internal static partial class Cpu
{
    /// <summary>Output size of a convolution or pooling window; 0 when the kernel does not fit (the span is tested before
    /// dividing: truncating division turned -1 / 2 into one output for a 1-wide input and a 2-wide kernel at stride 2).</summary>
    public static int ConvOut(int size, int k, int stride, int pad, int dil) => ConvOut(size, k, stride, pad, pad, dil);

    /// <summary>The even (or odd) floats of the 16 in <paramref name="lo"/>, <paramref name="hi"/>, in order: a within-lane
    /// shuffle, then the 64-bit pairs put in order. Needs AVX2.</summary>
    internal static Vector256<float> EvenLanes(Vector256<float> lo, Vector256<float> hi) =>
        Avx2.Permute4x64(Avx.Shuffle(lo, hi, 0x88).AsDouble(), 0xD8).AsSingle();

    /// <inheritdoc cref="EvenLanes"/>
    internal static Vector256<float> OddLanes(Vector256<float> lo, Vector256<float> hi) =>
        Avx2.Permute4x64(Avx.Shuffle(lo, hi, 0xDD).AsDouble(), 0xD8).AsSingle();

    /// <summary>
    /// even[j] = x[2j − pad] and odd[j] = x[2j + 1 − pad] for j &lt; n, zero outside [0, w) (all zero when
    /// <paramref name="x"/> is null): one input row split by column parity, as stride-2 kernels read it. Inside the row,
    /// 16-float loads split into both halves; the edges go one at a time.
    /// </summary>
    internal static unsafe void SplitPaddedRow(float* x, int w, int pad, float* even, float* odd, int n)
    {
        if (x is null)
        {
            new Span<float>(even, n).Clear();
            new Span<float>(odd, n).Clear();
            return;
        }
        int j = 0;
        for (; j < n && 2 * j - pad < 0; j++)
        {
            even[j] = At(x, w, 2 * j - pad);
            odd[j] = At(x, w, 2 * j + 1 - pad);
        }
        if (Avx2.IsSupported)
            for (; j + 8 <= n && 2 * j - pad + 16 <= w; j += 8)
            {
                var lo = Vector256.Load(x + 2 * j - pad);
                var hi = Vector256.Load(x + 2 * j - pad + 8);
                EvenLanes(lo, hi).Store(even + j);
                OddLanes(lo, hi).Store(odd + j);
            }
        for (; j < n; j++)
        {
            even[j] = At(x, w, 2 * j - pad);
            odd[j] = At(x, w, 2 * j + 1 - pad);
        }

        static float At(float* x, int w, int i) => (uint)i < (uint)w ? x[i] : 0f;
    }

    /// <summary><see cref="ConvOut(int, int, int, int, int)"/> with different padding before and after.</summary>
    public static int ConvOut(int size, int k, int stride, int padBefore, int padAfter, int dil)
    {
        int span = size + padBefore + padAfter - dil * (k - 1) - 1;
        return span < 0 ? 0 : span / stride + 1;
    }

    /// <summary>im2col: [N, C, H, W] → [N, C·kh·kw, oh·ow], zero outside the padded input.</summary>
    public static Tensor Unfold(Tensor x, int kh, int kw, int sh, int sw, int ph, int pw, int dh, int dw, bool knl = false)
    {
        int n = x.shape[0], c = x.shape[1], h = x.shape[2], w = x.shape[3];
        int oh = ConvOut(h, kh, sh, ph, dh), ow = ConvOut(w, kw, sw, pw, dw);
        if (oh <= 0 || ow <= 0)
            throw new ShapeMismatchException($"unfold: kernel {kh}x{kw} (dilation {dh}x{dw}) does not fit input {ShapeUtil.Format(x.shape)} with padding {ph}x{pw}");
        int l = oh * ow, rows = c * kh * kw;
        var r = Tensor.Empty(knl ? [rows, n * l] : [n, rows, l], x.DType);
        if (x.DType == DType.Float32) UnfoldT(x.ContiguousData<float>(), r.storage.As<float>(), n, c, h, w, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow, knl);
        else if (x.DType == DType.Float64) UnfoldT(x.ContiguousData<double>(), r.storage.As<double>(), n, c, h, w, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow, knl);
        else return Cast(Unfold(Cast(x, DType.Float32), kh, kw, sh, sw, ph, pw, dh, dw, knl), x.DType);
        return r;
    }

    static void UnfoldT<T>(T[] src, T[] dst, int n, int c, int h, int w, int kh, int kw, int sh, int sw, int ph, int pw, int dh, int dw, int oh, int ow, bool knl,
        int b0 = 0, bool parallel = true)
    {
        int l = oh * ow, rows = c * kh * kw;
        void One(int b)
        {
            for (int row = 0; row < rows; row++)
            {
                int ch = row / (kh * kw), ki = row / kw % kh, kj = row % kw;
                int srcBase = ((b0 + b) * c + ch) * h * w;
                int dstBase = knl ? (row * n + b) * l : (b * rows + row) * l;
                for (int y = 0; y < oh; y++)
                {
                    int iy = y * sh - ph + ki * dh;
                    int d = dstBase + y * ow;
                    if (iy < 0 || iy >= h) { dst.AsSpan(d, ow).Clear(); continue; }
                    int sbase = srcBase + iy * w;
                    if (sw == 1)
                    {
                        // Stride 1: the valid part of the row is one contiguous run; only the padded edges are zero.
                        // Span copies: rows are short (7–28 elements in small CNNs), where Array.Copy's checks dominate.
                        int ix0 = -pw + kj * dw;
                        int x0 = Math.Clamp(-ix0, 0, ow), x1 = Math.Clamp(w - ix0, x0, ow);
                        for (int x = 0; x < x0; x++) dst[d + x] = default!;
                        if (x1 > x0) src.AsSpan(sbase + ix0 + x0, x1 - x0).CopyTo(dst.AsSpan(d + x0, x1 - x0));
                        for (int x = x1; x < ow; x++) dst[d + x] = default!;
                    }
                    else
                    {
                        for (int x = 0; x < ow; x++)
                        {
                            int ix = x * sw - pw + kj * dw;
                            dst[d + x] = (uint)ix < (uint)w ? src[sbase + ix] : default!;
                        }
                    }
                }
            }
        }
        if (parallel && n > 1 && (long)n * rows * l > 1 << 16) WorkerPool.For(n, Gemm.Threads, One);
        else for (int b = 0; b < n; b++) One(b);
    }

    /// <summary>col2im: [N, C·kh·kw, L] → [N, C, H, W], summing overlapping windows (the adjoint of Unfold).</summary>
    /// <param name="knl">cols laid out [C·kh·kw, N·L] (the conv path's single-GEMM layout) instead of [N, C·kh·kw, L]; then n must be given.</param>
    public static Tensor Fold(Tensor cols, int c, int h, int w, int kh, int kw, int sh, int sw, int ph, int pw, int dh, int dw, bool knl = false, int n = 0)
    {
        if (!knl) n = cols.shape[0];
        int oh = ConvOut(h, kh, sh, ph, dh), ow = ConvOut(w, kw, sw, pw, dw);
        int[] expected = knl ? [c * kh * kw, n * oh * ow] : [n, c * kh * kw, oh * ow];
        if (!ShapeUtil.Equal(cols.shape, expected))
            throw new ShapeMismatchException($"fold: input {ShapeUtil.Format(cols.shape)} does not match output [{n}, {c}, {h}, {w}] with kernel {kh}x{kw}: expected {ShapeUtil.Format(expected)}");
        // Uninitialized: FoldT clears each image before it sums the windows into it.
        var r = Tensor.Empty([n, c, h, w], cols.DType);
        if (cols.DType == DType.Float32) FoldT(cols.ContiguousData<float>(), r.storage.As<float>(), n, c, h, w, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow, knl);
        else if (cols.DType == DType.Float64) FoldT(cols.ContiguousData<double>(), r.storage.As<double>(), n, c, h, w, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow, knl);
        else return Cast(Fold(Cast(cols, DType.Float32), c, h, w, kh, kw, sh, sw, ph, pw, dh, dw, knl, n), cols.DType);
        return r;
    }

    static void FoldT<T>(T[] src, T[] dst, int n, int c, int h, int w, int kh, int kw, int sh, int sw, int ph, int pw, int dh, int dw, int oh, int ow, bool knl)
        where T : unmanaged, System.Numerics.INumber<T>
    {
        int l = oh * ow, rows = c * kh * kw;
        var g = new ConvGeometry(n, c, h, w, 0, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow);
        // Image b's row r of columns starts at r·ld + c0: [C·kh·kw, N·L] (knl) or [N, C·kh·kw, L].
        void One(int b) => FoldImage(src, knl ? n * l : l, knl ? b * l : b * rows * l, dst, b * c * h * w, g);
        if (n > 1 && (long)n * rows * l > 1 << 16) WorkerPool.For(n, Gemm.Threads, One);
        else for (int b = 0; b < n; b++) One(b);
    }

    /// <summary>Flat index (into H·W) of each window's maximum; windows see -inf outside the input.</summary>
    public static Tensor MaxPoolIndices(Tensor x, int kh, int kw, int sh, int sw, int ph, int pw, int dh, int dw, int oh, int ow)
    {
        int n = x.shape[0], c = x.shape[1], h = x.shape[2], w = x.shape[3];
        var src = x.DType == DType.Float32 ? null : Cast(x, DType.Float64).storage.As<double>();
        var fsrc = x.DType == DType.Float32 ? x.ContiguousData<float>() : null;
        var r = Tensor.Empty([n, c, oh * ow], DType.Int64);
        var dst = r.storage.As<long>();
        void One(int plane)
        {
            int sbase = plane * h * w, dbase = plane * oh * ow;
            for (int y = 0; y < oh; y++)
            for (int xo = 0; xo < ow; xo++)
            {
                double best = double.NegativeInfinity;
                int bi = -1;
                for (int i = 0; i < kh; i++)
                {
                    int iy = y * sh - ph + i * dh;
                    if (iy < 0 || iy >= h) continue;
                    for (int j = 0; j < kw; j++)
                    {
                        int ix = xo * sw - pw + j * dw;
                        if (ix < 0 || ix >= w) continue;
                        double v = fsrc is not null ? fsrc[sbase + iy * w + ix] : src![sbase + iy * w + ix];
                        if (bi < 0 || v > best || double.IsNaN(v)) { best = v; bi = iy * w + ix; if (double.IsNaN(v)) goto done; }
                    }
                }
                done:
                dst[dbase + y * ow + xo] = bi;
            }
        }
        if (n * c > 1 && (long)n * c * oh * ow * kh * kw > 1 << 16) WorkerPool.For(n * c, Gemm.Threads, One);
        else for (int p = 0; p < n * c; p++) One(p);
        return r;
    }
}
