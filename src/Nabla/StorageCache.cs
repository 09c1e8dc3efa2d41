namespace Nabla;

/// <summary>
/// Arrays of disposed tensors kept for reuse, by dtype and exact length, like a caching allocator. Only buffers of at
/// least <see cref="MinBytes"/> are kept: smaller ones are cheap for the GC's young generation, while large ones live on
/// the large-object heap, where a fresh array costs page faults and a cache-cold first write. Tensors that are never
/// disposed are not affected; the cache only sees arrays whose tensors were all disposed (see <see cref="Storage"/>).
/// Thread-safe.
/// </summary>
/// <remarks>
/// Exact lengths, no size classes: the loops that dispose their tensors (inference, evaluation, serving) repeat the
/// same shapes, and a storage's length stays its tensor's element count. The cache holds at most
/// <see cref="LimitBytes"/>; arrays beyond it are left to the GC. The default limit is 512 MiB, or
/// <c>NABLA_STORAGE_CACHE_MB</c> from the environment (0 turns the cache off).
/// </remarks>
public static class StorageCache
{
    /// <summary>Arrays smaller than this are never cached (the size at which .NET puts arrays on the large-object heap).</summary>
    public const int MinBytes = 85_000;

    static readonly Lock gate = new();
    static readonly Dictionary<(DType, int), Stack<Array>> free = new();
    static long cachedBytes, hits;
    static long limitBytes = DefaultLimit();

    static long DefaultLimit() =>
        long.TryParse(Environment.GetEnvironmentVariable("NABLA_STORAGE_CACHE_MB"), out var mb) && mb >= 0 ? mb << 20 : 512L << 20;

    /// <summary>The most bytes the cache holds; lowering it drops arrays until the cache fits.</summary>
    public static long LimitBytes
    {
        get => Volatile.Read(ref limitBytes);
        set
        {
            ArgumentOutOfRangeException.ThrowIfNegative(value);
            lock (gate)
            {
                limitBytes = value;
                Trim(value);
            }
        }
    }

    /// <summary>Bytes held for reuse now.</summary>
    public static long CachedBytes
    {
        get { lock (gate) return cachedBytes; }
    }

    /// <summary>Allocations served from the cache since the process started.</summary>
    public static long Hits => Interlocked.Read(ref hits);

    /// <summary>Drops every cached array (the GC frees them), like <c>torch.cuda.empty_cache()</c>.</summary>
    public static void Clear()
    {
        lock (gate) Trim(0);
    }

    internal static Array? Take(DType dtype, int length)
    {
        lock (gate)
        {
            if (!free.TryGetValue((dtype, length), out var stack) || stack.Count == 0) return null;
            var a = stack.Pop();
            cachedBytes -= Bytes(a, dtype);
            hits++;
            return a;
        }
    }

    /// <summary>
    /// Fills every cached array with NaN or all-ones bits (NABLA_STORAGE_CACHE_POISON=1), so a kernel that wrongly
    /// relies on a fresh output being zero shows it at once. A debugging switch; tests run the quickstart with it.
    /// </summary>
    internal static bool Poison = Environment.GetEnvironmentVariable("NABLA_STORAGE_CACHE_POISON") == "1";

    internal static void Give(Array a, DType dtype)
    {
        long bytes = Bytes(a, dtype);
        if (Poison) PoisonArray(a, dtype);
        lock (gate)
        {
            if (cachedBytes + bytes > limitBytes) return;
            var key = (dtype, a.Length);
            if (!free.TryGetValue(key, out var stack)) free[key] = stack = new Stack<Array>();
            stack.Push(a);
            cachedBytes += bytes;
        }
    }

    static void PoisonArray(Array a, DType dtype)
    {
        switch (a)
        {
            case float[] f: Array.Fill(f, float.NaN); break;
            case double[] d: Array.Fill(d, double.NaN); break;
            case Half[] h: Array.Fill(h, Half.NaN); break;
            default:
                // Integers, bools and bfloat16: every byte 0xFF (-1, an invalid bool, NaN).
                System.Runtime.InteropServices.MemoryMarshal.CreateSpan(
                    ref System.Runtime.InteropServices.MemoryMarshal.GetArrayDataReference(a), a.Length * dtype.ElementSize()).Fill(0xFF);
                break;
        }
    }

    static long Bytes(Array a, DType dtype) => (long)a.Length * dtype.ElementSize();

    static void Trim(long target)
    {
        // NOTE: called under the lock. Drops whole size classes, largest arrays first.
        foreach (var key in free.Keys.OrderByDescending(k => (long)k.Item2 * k.Item1.ElementSize()).ToList())
        {
            var stack = free[key];
            while (cachedBytes > target && stack.Count > 0) cachedBytes -= Bytes(stack.Pop(), key.Item1);
            if (stack.Count == 0) free.Remove(key);
            if (cachedBytes <= target) return;
        }
    }
}
