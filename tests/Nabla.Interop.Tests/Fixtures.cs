using Nabla.IO;
using Xunit;

namespace Nabla.Interop.Tests;

static class Fixtures
{
    public static string Dir => Path.Combine(AppContext.BaseDirectory, "fixtures", "pytorch");

    public static string Path_(params string[] parts) => Path.Combine([Dir, .. parts]);

    public static string Generated(string file) => Path.Combine(Dir, "generated", file);

    /// <summary>Asserts both dictionaries hold the same names, dtypes, shapes and element bytes.</summary>
    public static void AssertSameTensors(IReadOnlyDictionary<string, Tensor> expected, IReadOnlyDictionary<string, Tensor> actual)
    {
        Assert.Equal(expected.Keys.Order(StringComparer.Ordinal), actual.Keys.Order(StringComparer.Ordinal));
        foreach (var (name, e) in expected)
        {
            var a = actual[name];
            Assert.True(e.DType == a.DType, $"{name}: dtype {a.DType}, expected {e.DType}");
            Assert.True(e.Shape.SequenceEqual(a.Shape), $"{name}: shape [{string.Join(", ", a.Shape)}], expected [{string.Join(", ", e.Shape)}]");
            Assert.True(e.ToBytes().AsSpan().SequenceEqual(a.ToBytes()), $"{name}: element bytes differ");
        }
    }

    public static Dictionary<string, Tensor> Expected(string stem) => SafeTensors.Load(Generated(stem + ".expected.safetensors"));

    /// <summary>A scratch directory removed when disposed.</summary>
    public sealed class TempDir : IDisposable
    {
        public string Path { get; } = System.IO.Path.Combine(System.IO.Path.GetTempPath(), "nabla-interop-" + Guid.NewGuid().ToString("N"));
        public TempDir() => Directory.CreateDirectory(Path);
        public string File(string name) => System.IO.Path.Combine(Path, name);
        public void Dispose() { try { Directory.Delete(Path, true); } catch (IOException) { } }
    }
}
