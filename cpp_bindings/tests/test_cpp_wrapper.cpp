// test_cpp_wrapper: the header-only C++ wrapper (medsam3rt.hpp) end to end.
//   test_cpp_wrapper MODEL PACK IMAGE.rgb W H    (raw 8-bit RGB, tightly packed)
// Prints the selected prompts' areas and the error text of a failed open; exits non-zero on
// any unexpected outcome. tests/cpp/test_cpp_bindings.py compares the areas with Python.
#include <cstdio>
#include <fstream>
#include <iostream>
#include <iterator>
#include <string>
#include <vector>

#include "medsam3rt/medsam3rt.hpp"

int main(int argc, char** argv) {
    if (argc != 6) {
        std::cerr << "usage: test_cpp_wrapper MODEL PACK IMAGE.rgb W H\n";
        return 2;
    }
    std::ifstream in(argv[3], std::ios::binary);
    std::vector<unsigned char> pixels((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    const int w = std::stoi(argv[4]), h = std::stoi(argv[5]);
    try {
        medsam3rt::Model opened(argv[1]);
        medsam3rt::Model model = std::move(opened);  // handles move; the moved-from one releases nothing
        medsam3rt::Prompts all = model.load_prompts(argv[2]);
        medsam3rt::Prompts picked = all.select({"fetal  HEAD", "Liver"});
        medsam3rt::Result r = model.segment(picked, medsam3rt::Image::u8(pixels.data(), w, h, MEDSAM3RT_RGB));
        if (r.width() != w || r.height() != h || r.size() != 2) return 1;
        for (size_t i = 0; i < r.size(); ++i) std::cout << picked.text(i) << " area " << r.area(i) << " score " << r.score(i) << "\n";
        try {
            r.mask(5);
            return 1;
        } catch (const medsam3rt::Error& e) {
            if (e.status() != MEDSAM3RT_ERROR_USAGE) return 1;
        }
    } catch (const medsam3rt::Error& e) {
        std::cout << "unexpected status " << e.status() << ": " << e.what() << "\n";
        return 1;
    }
    try {
        medsam3rt::Model missing("/nonexistent");
        return 1;
    } catch (const medsam3rt::Error& e) {
        std::cout << "status " << e.status() << ": " << e.what() << "\n";
    }
    return 0;
}
