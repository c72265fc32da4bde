// Unicode character properties as the HF reference saw them. The slow
// tokenizers run on Python 3.11, whose unicodedata is Unicode 14.0, while
// Debian's utf8proc 2.8 is Unicode 15.0. The only differences that matter
// (checked over all code points) are the ~4.5k code points first assigned in
// 15.0, which Python sees as unassigned (Cn), and Python's full lower-casing of
// U+0130. These helpers put utf8proc back in Python's view.
#pragma once

#include <utf8proc.h>

namespace maskserve::engine {

// Whether `cp` is unassigned in Unicode 14.0 but assigned in utf8proc's 15.0.
bool AssignedAfterUnicode14(char32_t cp);

// unicodedata.category(cp) of Python 3.11, as a utf8proc category value.
utf8proc_category_t PythonCategory(char32_t cp);

// Canonical combining class (unicodedata.combining).
int CombiningClass(char32_t cp);

}  // namespace maskserve::engine
