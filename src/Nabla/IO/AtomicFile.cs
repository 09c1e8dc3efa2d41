namespace Nabla.IO;

/// <summary>
/// Writes a file whole or not at all: into a hidden temporary file beside it, then renamed over the target, so a reader
/// (or a crash, or a full disk) never sees half a file; the temporary file is removed when writing fails.
/// </summary>
internal static class AtomicFile
{
    public static void Write(string path, Action<FileStream> write, bool flushToDisk = false)
    {
        string full = Path.GetFullPath(path);
        string temp = Path.Combine(Path.GetDirectoryName(full) ?? ".", $".{Path.GetFileName(full)}.{Guid.NewGuid():N}.tmp");
        try
        {
            using (var fs = new FileStream(temp, FileMode.CreateNew, FileAccess.Write, FileShare.None, 1 << 16))
            {
                write(fs);
                fs.Flush(flushToDisk);
            }
            File.Move(temp, full, overwrite: true);
        }
        catch
        {
            try { File.Delete(temp); } catch (IOException) { } catch (UnauthorizedAccessException) { }
            throw;
        }
    }

    public static void WriteAllBytes(string path, byte[] bytes) => Write(path, fs => fs.Write(bytes));
}
