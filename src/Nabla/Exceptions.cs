namespace Nabla;

/// <summary>Base of every error Nabla throws on misuse. The message names the op and what was wrong.</summary>
public class NablaException : Exception
{
    public NablaException(string message) : base(message) { }
    public NablaException(string message, Exception inner) : base(message, inner) { }
}

/// <summary>Shapes that do not fit the op: the message names the op, both shapes and the dimension.</summary>
public sealed class ShapeMismatchException : NablaException
{
    public ShapeMismatchException(string message) : base(message) { }
}

/// <summary>A dimension index outside the tensor's rank.</summary>
public sealed class DimensionOutOfRangeException : NablaException
{
    public DimensionOutOfRangeException(string message) : base(message) { }
}

/// <summary>An element type the op cannot take.</summary>
public sealed class DTypeException : NablaException
{
    public DTypeException(string message) : base(message) { }
}

/// <summary>An index (from a tensor or an argument) outside the valid range.</summary>
public sealed class IndexOutOfBoundsException : NablaException
{
    public IndexOutOfBoundsException(string message) : base(message) { }
}

/// <summary>Misuse of autograd: backward through a non-differentiable value, a saved tensor modified in place, and so on.</summary>
public sealed class AutogradException : NablaException
{
    public AutogradException(string message) : base(message) { }
}

/// <summary>A model or data file that is truncated, corrupt or not what it claims to be. Names the file and the reason.</summary>
public sealed class ModelFormatException : NablaException
{
    public ModelFormatException(string message) : base(message) { }
    public ModelFormatException(string message, Exception inner) : base(message, inner) { }
}

/// <summary>A data set file (IDX, CSV, image folder) that cannot be read: names the file and the problem.</summary>
public sealed class DataFormatException : NablaException
{
    public DataFormatException(string message) : base(message) { }
    public DataFormatException(string message, Exception inner) : base(message, inner) { }
}
