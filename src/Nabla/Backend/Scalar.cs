using System.Runtime.CompilerServices;

namespace Nabla;

/// <summary>Conversions between element types without boxing (the JIT removes the untaken branches).</summary>
internal static class Scalar
{
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static double ToDouble<T>(T v)
    {
        if (typeof(T) == typeof(float)) return Unsafe.As<T, float>(ref v);
        if (typeof(T) == typeof(double)) return Unsafe.As<T, double>(ref v);
        if (typeof(T) == typeof(long)) return Unsafe.As<T, long>(ref v);
        if (typeof(T) == typeof(int)) return Unsafe.As<T, int>(ref v);
        if (typeof(T) == typeof(sbyte)) return Unsafe.As<T, sbyte>(ref v);
        if (typeof(T) == typeof(byte)) return Unsafe.As<T, byte>(ref v);
        if (typeof(T) == typeof(bool)) return Unsafe.As<T, bool>(ref v) ? 1 : 0;
        if (typeof(T) == typeof(Half)) return (double)Unsafe.As<T, Half>(ref v);
        if (typeof(T) == typeof(BFloat16)) return (float)Unsafe.As<T, BFloat16>(ref v);
        if (typeof(T) == typeof(short)) return Unsafe.As<T, short>(ref v);
        if (typeof(T) == typeof(ushort)) return Unsafe.As<T, ushort>(ref v);
        if (typeof(T) == typeof(uint)) return Unsafe.As<T, uint>(ref v);
        if (typeof(T) == typeof(ulong)) return Unsafe.As<T, ulong>(ref v);
        throw new DTypeException($"unsupported element type {typeof(T).Name}");
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static T FromDouble<T>(double d)
    {
        if (typeof(T) == typeof(float)) { float f = (float)d; return Unsafe.As<float, T>(ref f); }
        if (typeof(T) == typeof(double)) return Unsafe.As<double, T>(ref d);
        if (typeof(T) == typeof(long)) { long x = double.IsNaN(d) ? long.MinValue : (long)d; return Unsafe.As<long, T>(ref x); }
        if (typeof(T) == typeof(int)) { int x = (int)(long)d; return Unsafe.As<int, T>(ref x); }
        if (typeof(T) == typeof(sbyte)) { sbyte x = (sbyte)(long)d; return Unsafe.As<sbyte, T>(ref x); }
        if (typeof(T) == typeof(byte)) { byte x = (byte)(long)d; return Unsafe.As<byte, T>(ref x); }
        if (typeof(T) == typeof(bool)) { bool x = d != 0; return Unsafe.As<bool, T>(ref x); }
        if (typeof(T) == typeof(Half)) { Half x = (Half)d; return Unsafe.As<Half, T>(ref x); }
        if (typeof(T) == typeof(BFloat16)) { BFloat16 x = (BFloat16)(float)d; return Unsafe.As<BFloat16, T>(ref x); }
        if (typeof(T) == typeof(short)) { short x = (short)(long)d; return Unsafe.As<short, T>(ref x); }
        if (typeof(T) == typeof(ushort)) { ushort x = (ushort)(long)d; return Unsafe.As<ushort, T>(ref x); }
        if (typeof(T) == typeof(uint)) { uint x = (uint)(long)d; return Unsafe.As<uint, T>(ref x); }
        if (typeof(T) == typeof(ulong)) { ulong x = DoubleToUInt64(d); return Unsafe.As<ulong, T>(ref x); }
        throw new DTypeException($"unsupported element type {typeof(T).Name}");
    }

    /// <summary>
    /// double → uint64: truncation toward zero; values in [2^63, 2^64) convert directly, smaller ones (negatives
    /// included) through int64 and wrap modulo 2^64, the rule every narrower integer type follows (-1.0 → 2^64-1).
    /// NaN gives 0 and out-of-range values saturate, as .NET's conversions do.
    /// </summary>
    public static ulong DoubleToUInt64(double d) => d >= 9223372036854775808.0 ? (ulong)d : double.IsNaN(d) ? 0 : unchecked((ulong)(long)d);
}

/// <summary>The error function in double precision (series near 0, continued fraction for the tail).</summary>
internal static class SpecialFunctions
{
    const double TwoOverSqrtPi = 1.1283791670955126;

    public static double Erf(double x)
    {
        if (double.IsNaN(x)) return x;
        double ax = Math.Abs(x);
        if (ax < 2.5)
        {
            // erf(x) = 2/sqrt(pi) * sum_n (-1)^n x^(2n+1) / (n! (2n+1))
            double x2 = x * x, term = x, sum = x;
            for (int n = 1; n < 200; n++)
            {
                term *= -x2 / n;
                double t = term / (2 * n + 1);
                sum += t;
                if (Math.Abs(t) < 1e-17 * Math.Abs(sum)) break;
            }
            return TwoOverSqrtPi * sum;
        }
        if (ax > 6.5) return Math.Sign(x);
        // erfc(x) = exp(-x^2)/sqrt(pi) * 1/(x + (1/2)/(x + 1/(x + (3/2)/(x + ...)))) evaluated from the tail.
        double f = ax;
        for (int k = 60; k >= 1; k--) f = ax + (k / 2.0) / f;
        double erfc = Math.Exp(-ax * ax) / Math.Sqrt(Math.PI) / f;
        return x > 0 ? 1 - erfc : erfc - 1;
    }
}
