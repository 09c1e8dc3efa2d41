namespace Nabla;

/// <summary>Per-thread scratch buffers for the kernels: a <c>[ThreadStatic]</c> field grown on demand and reused, so a
/// warm kernel allocates nothing.</summary>
internal static class ThreadScratch
{
    /// <summary>A thread-static scratch buffer of at least <paramref name="need"/> elements (grown to at least twice its size).</summary>
    public static T[] Grow<T>(ref T[]? buffer, int need) where T : unmanaged
    {
        if (buffer is null || buffer.Length < need) buffer = GC.AllocateUninitializedArray<T>(Math.Max(need, buffer?.Length * 2 ?? 0));
        return buffer;
    }
}
