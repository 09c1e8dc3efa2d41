using System.Runtime.CompilerServices;
using System.Text;

namespace Nabla.Interop.Onnx;

/// <summary>
/// A tensor of byte strings (ONNX STRING, the inference protocol's BYTES): a shape and the elements in row-major order.
/// Nabla's <see cref="Tensor"/> holds numbers only, so a string tensor crosses the graph executor inside a
/// <em>carrier</em>: a UInt8 tensor of the same shape that this class maps back to the strings
/// (<see cref="ToCarrier"/>, <see cref="FromCarrier"/>). Only the string-aware kernels of <c>StringOps</c> read
/// carriers; any other operator handed one throws instead of computing on the placeholder bytes.
/// </summary>
public sealed class StringTensor
{
    static readonly ConditionalWeakTable<Tensor, StringTensor> Carriers = new();

    public int[] Shape { get; }
    /// <summary>The elements, row-major; each is the raw bytes (UTF-8 for text, but any bytes are allowed).</summary>
    public byte[][] Data { get; }

    public StringTensor(byte[][] data, int[] shape)
    {
        long n = 1;
        foreach (var d in shape)
        {
            if (d < 0) throw new ArgumentException($"string tensor shape [{string.Join(", ", shape)}] has a negative dimension", nameof(shape));
            n *= d;
        }
        if (n != data.Length)
            throw new ArgumentException($"{data.Length} strings do not fill shape [{string.Join(", ", shape)}] ({n} elements)", nameof(data));
        Data = data;
        Shape = shape;
    }

    public int Count => Data.Length;

    /// <summary>A string tensor of UTF-8 encoded <paramref name="values"/>.</summary>
    public static StringTensor FromStrings(IReadOnlyList<string> values, params int[] shape) =>
        new([.. values.Select(Encoding.UTF8.GetBytes)], shape);

    /// <summary>The elements decoded as UTF-8 (invalid bytes become U+FFFD).</summary>
    public string[] ToStrings() => [.. Data.Select(b => Encoding.UTF8.GetString(b))];

    /// <summary>A new UInt8 tensor of this shape that stands for these strings in a graph run.</summary>
    public Tensor ToCarrier()
    {
        var t = Tensor.Zeros(Shape, DType.UInt8);
        Carriers.Add(t, this);
        return t;
    }

    /// <summary>The strings a carrier stands for, or null when <paramref name="t"/> is an ordinary tensor.</summary>
    public static StringTensor? FromCarrier(Tensor? t) => t is not null && Carriers.TryGetValue(t, out var s) ? s : null;

    public static bool IsCarrier(Tensor? t) => t is not null && Carriers.TryGetValue(t, out _);

    /// <summary>Joins tensors along dim 0 (every other dim equal).</summary>
    public static StringTensor Cat0(IReadOnlyList<StringTensor> parts)
    {
        if (parts.Count == 0) throw new ArgumentException("nothing to concatenate", nameof(parts));
        var rest = parts[0].Shape.Skip(1).ToArray();
        foreach (var p in parts)
            if (p.Shape.Length == 0 || !p.Shape.AsSpan(1).SequenceEqual(rest))
                throw new ArgumentException($"string tensors of shapes {string.Join(", ", parts.Select(x => $"[{string.Join(", ", x.Shape)}]"))} cannot be joined along dim 0", nameof(parts));
        return new([.. parts.SelectMany(p => p.Data)], [parts.Sum(p => p.Shape[0]), .. rest]);
    }

    /// <summary>Rows <paramref name="start"/> .. start+length of dim 0.</summary>
    public StringTensor Narrow0(int start, int length)
    {
        if (Shape.Length == 0 || start < 0 || length < 0 || start + length > Shape[0])
            throw new ArgumentOutOfRangeException(nameof(start), $"rows {start}..{start + length} of shape [{string.Join(", ", Shape)}]");
        int row = Shape[0] == 0 ? 0 : Data.Length / Shape[0];
        return new(Data.AsSpan(start * row, length * row).ToArray(), [length, .. Shape.AsSpan(1)]);
    }
}
