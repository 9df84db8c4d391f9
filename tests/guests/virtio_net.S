# Drives a virtio-net device in MMIO slot 0 from ring 3: negotiates F_MAC, prints the MAC,
# sends one Ethernet frame (ethertype 0x88b5, payload "frame-from-guest"), then waits for a
# frame of that ethertype and prints its first 16 payload bytes:
#   "mac=xx:..:xx" "tx=ok" "rx=<16 bytes>" "done"
    .include "common.inc"
    .include "virtio.inc"

    .set RXBUF, 0x610000
    .set TXBUF, 0x620000
    .set FRAME_LEN, 12 + 14 + 16

user_main:
    mov $0xc0001000, %r15
    mov $2, %esi
    mov $0x20, %r8d             # VIRTIO_NET_F_MAC
    call vio_init

    lea m_mac(%rip), %rsi
    call puts
    xor %ebx, %ebx
1:  movb 0x100(%r15, %rbx), %al # config space: mac[6]
    movb %al, TXBUF + 12 + 6(%rbx)
    call puthex
    inc %ebx
    cmp $6, %ebx
    je 2f
    mov $':', %al
    call putc
    jmp 1b
2:
    # rx buffer: descriptor 0 of queue 0
    mov $0, %edi; mov $0, %esi; mov $RXBUF, %edx; mov $2048, %ecx; mov $F_WRITE, %r8d; mov $0, %r9d
    call vio_desc
    mov $0, %edi; mov $0, %esi
    call vio_push

    # tx frame: zero vnet header, broadcast dst, our MAC as src, ethertype 0x88b5, payload
    movl $0xffffffff, TXBUF + 12
    movw $0xffff, TXBUF + 16
    movw $0xb588, TXBUF + 24
    lea txmsg(%rip), %rsi
    mov $(TXBUF + 26), %edi
    mov $16, %ecx
    call memcpy_small
    mov $1, %edi; mov $0, %esi; mov $TXBUF, %edx; mov $FRAME_LEN, %ecx; mov $0, %r8d; mov $0, %r9d
    call vio_desc
    mov $1, %edi; mov $0, %esi
    call vio_push
    mov $1, %edi; mov $1, %esi
    call vio_wait
    lea m_tx(%rip), %rsi
    call puts

    # rx: wait for a frame with our ethertype (skip others, reposting the buffer)
    mov $1, %r12d
3:  mov $0, %edi; mov %r12d, %esi
    call vio_wait
    cmpw $0xb588, RXBUF + 12 + 12
    je 4f
    cmp $20, %r12d
    je 5f
    inc %r12d
    mov $0, %edi; mov $0, %esi
    call vio_push
    jmp 3b
4:  lea m_rx(%rip), %rsi
    call puts
    mov $(RXBUF + 12 + 14), %esi
    mov $16, %ecx
    call putn
5:  lea m_done(%rip), %rsi
    call puts
    jmp reset

txmsg:
    .ascii "frame-from-guest"
m_mac:
    .asciz "mac="
m_tx:
    .asciz "\ntx=ok"
m_rx:
    .asciz "\nrx="
m_done:
    .asciz "\ndone\n"
