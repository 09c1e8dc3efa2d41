namespace Nabla;

/// <summary>
/// A seedable random stream (xoshiro256** seeded through SplitMix64). The same seed gives the same values on
/// every run and machine: the algorithm is fixed here and uses no platform randomness. Normal samples use
/// Box–Muller in double precision.
/// </summary>
public sealed class Generator
{
    ulong s0, s1, s2, s3;
    double? spareNormal;

    public Generator(ulong seed = 0x853C49E6748FEA9BUL) => ManualSeed(seed);

    /// <summary>The process-wide default stream, like PyTorch's default CPU generator.</summary>
    public static Generator Default { get; } = new();

    public ulong InitialSeed { get; private set; }

    public Generator ManualSeed(ulong seed)
    {
        InitialSeed = seed;
        ulong x = seed;
        s0 = SplitMix(ref x); s1 = SplitMix(ref x); s2 = SplitMix(ref x); s3 = SplitMix(ref x);
        spareNormal = null;
        return this;
    }

    static ulong SplitMix(ref ulong x)
    {
        ulong z = x += 0x9E3779B97F4A7C15UL;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
        return z ^ (z >> 31);
    }

    public ulong NextUInt64()
    {
        ulong result = ulong.RotateLeft(s1 * 5, 7) * 9;
        ulong t = s1 << 17;
        s2 ^= s0; s3 ^= s1; s1 ^= s2; s0 ^= s3;
        s2 ^= t;
        s3 = ulong.RotateLeft(s3, 45);
        return result;
    }

    /// <summary>Uniform in [0, 1) with 53 random bits.</summary>
    public double NextDouble() => (NextUInt64() >> 11) * (1.0 / (1UL << 53));

    /// <summary>Uniform in [0, 1) as float32 with 24 random bits (never rounds up to 1).</summary>
    public float NextFloat() => (NextUInt64() >> 40) * (1.0f / (1 << 24));

    public double NextNormal()
    {
        if (spareNormal is double s) { spareNormal = null; return s; }
        double u1;
        do u1 = NextDouble(); while (u1 <= double.Epsilon);
        double u2 = NextDouble();
        double r = Math.Sqrt(-2.0 * Math.Log(u1));
        spareNormal = r * Math.Sin(2 * Math.PI * u2);
        return r * Math.Cos(2 * Math.PI * u2);
    }

    /// <summary>Uniform integer in [low, high).</summary>
    public long NextLong(long low, long high)
    {
        if (high <= low) throw new NablaException($"random: empty range [{low}, {high})");
        ulong range = (ulong)(high - low);
        // Rejection sampling removes modulo bias.
        ulong limit = ulong.MaxValue - ulong.MaxValue % range;
        ulong v;
        do v = NextUInt64(); while (v >= limit);
        return low + (long)(v % range);
    }

    /// <summary>The full state, for checkpoints that must resume the exact stream.</summary>
    public ulong[] GetState() => [s0, s1, s2, s3, spareNormal is double d ? 1UL : 0UL, BitConverter.DoubleToUInt64Bits(spareNormal ?? 0)];

    public void SetState(ulong[] state)
    {
        if (state.Length != 6) throw new NablaException($"generator: state must have 6 words, got {state.Length}");
        (s0, s1, s2, s3) = (state[0], state[1], state[2], state[3]);
        spareNormal = state[4] != 0 ? BitConverter.UInt64BitsToDouble(state[5]) : null;
    }
}
