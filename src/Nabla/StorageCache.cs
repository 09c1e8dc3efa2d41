namespace Nabla;

/// <summary>
/// Arrays of disposed tensors kept for reuse, by dtype and exact length, like a caching allocator. Only buffers of at
/// least <see cref="MinBytes"/> are kept: smaller ones are cheap for the GC's young generation, while large ones live on
/// the large-object heap, where a fresh array costs page faults and a cache-cold first write. Tensors that are never
/// disposed are not affected; the cache only sees arrays whose tensors were all disposed (see <see cref="Storage"/>).
/// Thread-safe.
/// </summary>
/// <remarks>
/// Exact lengths, no size classes: the loops that dispose their tensors (training steps, evaluation, inference) repeat the
/// same shapes, and a storage's length stays its tensor's element count. The cache holds at most
/// <see cref="LimitBytes"/>; a full cache drops its oldest arrays first. The default limit is 256 MiB, or
/// <c>NABLA_STORAGE_CACHE_MB</c> from the environment (0 turns the cache off).
/// </remarks>
public static class StorageCache
{
    /// <summary>Arrays smaller than this are never cached (the size at which .NET puts arrays on the large-object heap).</summary>
    public const int MinBytes = 85_000;

    static readonly Lock gate = new();
    // Per size class, the cached arrays (most recent last); across all classes, the same entries oldest first, so a
    // full cache drops what waited longest (a size the loop stopped using) to take the newest.
    // Keyed by dtype and length packed into a long: a dictionary keyed by a (DType, int) tuple is an instantiation that
    // ReadyToRun does not hold, so the JIT would compile it at the first large allocation (docs/architecture.md, "Start-up").
    static readonly Dictionary<long, LinkedList<Entry>> free = new();
    static long Key(DType dtype, int length) => ((long)dtype << 32) | (uint)length;
    static readonly LinkedList<Entry> age = new();
    static long cachedBytes, hits;
    static long limitBytes = DefaultLimit();

    sealed class Entry(Array array, DType dtype)
    {
        public readonly Array Array = array;
        public readonly DType DType = dtype;
        public LinkedListNode<Entry>? InClass, InAge;
        public long Bytes => (long)Array.Length * DType.ElementSize();
    }

    static long DefaultLimit() =>
        long.TryParse(Environment.GetEnvironmentVariable("NABLA_STORAGE_CACHE_MB"), out var mb) && mb >= 0 ? mb << 20 : 256L << 20;

    /// <summary>The most bytes the cache holds; lowering it drops the oldest arrays until the cache fits.</summary>
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
            if (!free.TryGetValue(Key(dtype, length), out var list) || list.Last is not { } node) return null;
            Remove(node.Value);
            hits++;
            return node.Value.Array;
        }
    }

    /// <summary>
    /// Fills every cached array with NaN or all-ones bits (NABLA_STORAGE_CACHE_POISON=1), so a kernel that wrongly
    /// relies on a fresh output being zero shows it at once. A debugging switch; the scoped training tests turn it on.
    /// </summary>
    internal static bool Poison = Environment.GetEnvironmentVariable("NABLA_STORAGE_CACHE_POISON") == "1";

    internal static void Give(Array a, DType dtype)
    {
        if (Poison) PoisonArray(a, dtype);
        var e = new Entry(a, dtype);
        lock (gate)
        {
            if (e.Bytes > limitBytes) return;
            Trim(limitBytes - e.Bytes);
            var key = Key(dtype, a.Length);
            if (!free.TryGetValue(key, out var list)) free[key] = list = new LinkedList<Entry>();
            e.InClass = list.AddLast(e);
            e.InAge = age.AddLast(e);
            cachedBytes += e.Bytes;
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

    // NOTE: called under the lock.
    static void Remove(Entry e)
    {
        var key = Key(e.DType, e.Array.Length);
        var list = free[key];
        list.Remove(e.InClass!);
        if (list.Count == 0) free.Remove(key);
        age.Remove(e.InAge!);
        cachedBytes -= e.Bytes;
    }

    // NOTE: called under the lock. Drops the oldest arrays until at most target bytes remain.
    static void Trim(long target)
    {
        while (cachedBytes > target && age.First is { } oldest) Remove(oldest.Value);
    }
}
