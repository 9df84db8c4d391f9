fn main() {
    println!("vmctl");
}
